"""Parquet, Arrow (`datasets.save_to_disk`) and zstd sources: same shards as plain files; damage."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import warnings
from pathlib import Path

import pytest
from lmforge_testing import require

from lmforge.config import build_config
from lmforge.data import sources
from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.errors import DataError

# datasets only writes local dirs here; offline mode makes sure it never reaches for the Hub.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
for _module in ("pyarrow", "zstandard", "datasets"):
    if importlib.util.find_spec(_module) is None:
        require(False, f"{_module} not installed (pip install 'lmforge[formats]')")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import zstandard  # noqa: E402

WORDS = "the of and to in is naïve 東京 😀 e\u0301 tab\t".split(" ")


def _documents(count: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = (
        [" ".join(rng.choices(WORDS, k=rng.randint(2, 9))) for _ in range(rng.randint(1, 4))]
        for _ in range(count)
    )
    return ["\n".join(doc) + f" doc {i}" for i, doc in enumerate(lines)]


def _jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


def _parquet(path: Path, docs: list[str], row_group_size: int = 7) -> Path:
    table = pa.table({"id": list(range(len(docs))), "text": docs})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _zst(path: Path, data: bytes, frames: int = 3) -> Path:
    """`data` as several zstd frames (like the Pile's files, which are concatenated frames)."""
    step = max(1, len(data) // frames)
    compressor = zstandard.ZstdCompressor(level=3)
    path.write_bytes(
        b"".join(compressor.compress(data[i : i + step]) for i in range(0, len(data), step))
    )
    return path


def _saved(path: Path, docs: list[str], num_shards: int = 2) -> Path:
    import datasets

    datasets.disable_progress_bars()
    datasets.Dataset.from_dict({"text": docs, "n": list(range(len(docs)))}).save_to_disk(
        str(path), num_shards=num_shards
    )
    return path


def _build(tmp_path: Path, name: str, source, **overrides) -> dict[str, bytes]:
    """Prepare `source` and return every output file's bytes except meta/stats."""
    overrides.setdefault("tokenizer", {"kind": "bpe", "vocab_size": 300})
    overrides.update(source=source, out=str(tmp_path / name))
    result = prepare(build_config(PrepareConfig, overrides=overrides))
    return {
        p.name: p.read_bytes()
        for p in sorted(result.out.iterdir())
        if p.name not in ("meta.json", "stats.json")
    }


@pytest.fixture
def docs() -> list[str]:
    return _documents()


@pytest.fixture
def reference(tmp_path, docs) -> dict[str, bytes]:
    return _build(tmp_path, "ref", str(_jsonl(tmp_path / "ref.jsonl", docs)))


def test_parquet_equals_jsonl(tmp_path, docs, reference):
    path = _parquet(tmp_path / "c.parquet", docs)
    assert pq.ParquetFile(path).num_row_groups == 6  # several row groups, streamed
    assert _build(tmp_path, "pq", str(path)) == reference


def test_jsonl_zst_equals_jsonl(tmp_path, docs, reference):
    data = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
    path = _zst(tmp_path / "c.jsonl.zst", data)
    assert _build(tmp_path, "zst", str(path)) == reference


def test_saved_dataset_equals_jsonl(tmp_path, docs, reference):
    path = _saved(tmp_path / "saved", docs)
    assert len(list(path.glob("*.arrow"))) == 2
    assert _build(tmp_path, "arrow", str(path)) == reference


def test_dataset_dict_reads_splits_in_order(tmp_path, docs):
    import datasets

    datasets.disable_progress_bars()
    half = len(docs) // 2
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": docs[:half]}),
            "test": datasets.Dataset.from_dict({"text": docs[half:]}),
        }
    ).save_to_disk(str(tmp_path / "dd"))
    found, _ = _read([str(tmp_path / "dd")])
    assert [d.text for d in found] == docs


def test_mixed_directory_equals_plain_files(tmp_path, docs):
    mixed, plain = tmp_path / "mixed", tmp_path / "plain"
    mixed.mkdir()
    plain.mkdir()
    # Sorted names: a.parquet, b.jsonl.zst, c.txt.zst, d.txt; the plain twin has the same order.
    _parquet(mixed / "a.parquet", docs[:10])
    _jsonl(plain / "a.jsonl", docs[:10])
    data = "".join(json.dumps({"text": d}) + "\n" for d in docs[10:20]).encode()
    _zst(mixed / "b.jsonl.zst", data)
    (plain / "b.jsonl").write_bytes(data)
    _zst(mixed / "c.txt.zst", docs[20].encode())
    (plain / "c.txt").write_text(docs[20], encoding="utf-8")
    (mixed / "d.txt").write_text(docs[21], encoding="utf-8")
    (plain / "d.txt").write_text(docs[21], encoding="utf-8")
    assert _build(tmp_path, "m", str(mixed)) == _build(tmp_path, "p", str(plain))


def _read(specs: list[str], **options):
    stats = sources.ReadStats()
    opts = sources.SourceOptions(**options)
    return list(sources.iter_documents(sources.resolve(specs, opts), opts, stats)), stats


def test_nested_parquet_field_and_deprecated_name(tmp_path, docs):
    table = pa.table({"body": [{"text": d, "lang": "en"} for d in docs[:5]]})
    pq.write_table(table, tmp_path / "n.parquet")
    found, _ = _read([str(tmp_path / "n.parquet")], text_field="body.text")
    assert [d.text for d in found] == docs[:5] and found[0].name.endswith("n.parquet#0")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        cfg = build_config(PrepareConfig, overrides={"jsonl_field": "body.text"})
    assert cfg.text_field == "body.text"


def test_missing_column_and_null_rows(tmp_path):
    pq.write_table(pa.table({"content": ["a", None, "b"]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet has no column 'text' \(found: content\)"):
        _read([str(tmp_path / "t.parquet")])
    with pytest.raises(DataError, match=r"t\.parquet row 1: field 'content' is null"):
        _read([str(tmp_path / "t.parquet")], text_field="content")
    path = str(tmp_path / "t.parquet")
    found, stats = _read([path], text_field="content", encoding_errors="skip")
    assert [d.text for d in found] == ["a", "b"] and stats.skipped_rows == 1


def test_binary_column_is_decoded_under_the_policy(tmp_path):
    pq.write_table(pa.table({"text": [b"ok", b"bad \xff byte"]}), tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet row 1 is not valid UTF-8"):
        _read([str(tmp_path / "b.parquet")])
    found, stats = _read([str(tmp_path / "b.parquet")], encoding_errors="replace")
    assert [d.text for d in found] == ["ok", "bad \ufffd byte"] and stats.replaced == 1


@pytest.mark.parametrize("kind", ["parquet", "jsonl.zst", "txt.zst", "arrow", "zst-garbage"])
def test_truncated_or_corrupt_file_is_named(tmp_path, docs, kind):
    if kind == "parquet":
        path = _parquet(tmp_path / "c.parquet", docs)
    elif kind == "jsonl.zst":
        data = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
        path = _zst(tmp_path / "c.jsonl.zst", data, frames=1)
    elif kind == "txt.zst":
        path = _zst(tmp_path / "c.txt.zst", "\n".join(docs).encode(), frames=2)
    elif kind == "arrow":
        path = next(_saved(tmp_path / "saved", docs, num_shards=1).glob("*.arrow"))
    else:
        path = tmp_path / "g.jsonl.zst"
        path.write_bytes(b"this is not zstd at all" * 10)
    if kind != "zst-garbage":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])  # a download that stopped
    with pytest.raises(DataError, match=rf"{path.name} (is truncated|is not valid zstd)"):
        _read([str(path)])
    found, stats = _read([str(path)], encoding_errors="skip")
    assert stats.damaged_files == 1 and any(path.name in s for s in stats.skipped)
    assert "truncated/corrupt" in stats.summary()
    assert all(d.text in docs for d in found) or kind == "txt.zst"  # rows before the damage


def test_compressed_table_is_refused(tmp_path, docs):
    path = _parquet(tmp_path / "c.parquet", docs)
    _zst(tmp_path / "c.parquet.zst", path.read_bytes())
    with pytest.raises(DataError, match="compressed .parquet file is not supported"):
        _read([str(tmp_path / "c.parquet.zst")])
