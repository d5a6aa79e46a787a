"""`prepare`: data dir contents, splits, worker parity, no-op reruns, atomicity, bad input."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import tokenizers

from lmforge.config import build_config
from lmforge.data import encode, spool, units
from lmforge.data.prepare import (
    PrepareConfig,
    default_out,
    format_report,
    plan_split,
    prepare,
    training_sample,
)
from lmforge.data.reader import DataDir
from lmforge.errors import ConfigError, DataError

EOT = "<|endoftext|>"
WORDS = "the of and to in is was for on that with as by at from his her it be are".split()


def _write_corpus(root: Path, num_docs: int = 30, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(num_docs):
        lines = [
            " ".join(rng.choices(WORDS, k=rng.randint(3, 12))) for _ in range(rng.randint(1, 8))
        ]
        (root / f"doc{i:03d}.txt").write_text("\n".join(lines) + f"\nnumber {i} é\n")
    return root


def _cfg(**overrides) -> PrepareConfig:
    overrides.setdefault("tokenizer", {"kind": "bpe", "vocab_size": 300})
    return build_config(PrepareConfig, overrides=overrides)


def _split_docs(data: DataDir, split: str) -> list[str]:
    text = data.decode(split, 0, data.num_tokens(split))
    assert text.endswith(EOT)
    return text.split(EOT)[:-1]


def test_data_dir_holds_every_document_once(tmp_path):
    src = _write_corpus(tmp_path / "src")
    result = prepare(_cfg(source=str(src), out=str(tmp_path / "d")))
    data = DataDir.open(tmp_path / "d")
    meta = data.meta
    assert sorted(p.name for p in data.path.iterdir()) == [
        "meta.json", "stats.json", "tokenizer.json", "train_000.bin", "val_000.bin",
    ]  # fmt: skip
    assert meta["documents"] == {"train": 27, "val": 3} and data.splits == ["train", "val"]
    assert meta["vocab_size"] == data.tokenizer.vocab_size == 300 and meta["dtype"] == "uint16"
    originals = sorted(p.read_text() for p in src.iterdir())
    assert sorted(_split_docs(data, "train") + _split_docs(data, "val")) == originals
    for split in ("train", "val"):
        assert data.num_tokens(split) == sum(len(s) for s in data.shards(split))
    # The data dir's tokenizer.json is plain HF and round-trips arbitrary text exactly.
    hf = tokenizers.Tokenizer.from_file(str(data.path / "tokenizer.json"))
    text = "naïve 東京 😀 e\u0301 \x07 tab\t" + originals[0]
    assert hf.decode(hf.encode(text).ids) == text
    report = format_report(result)
    assert "nfc" in report and "train:" in report and str(tmp_path / "d") in report


def test_a_few_unequal_documents_warn_that_val_is_off_its_share(tmp_path, caplog):
    src = tmp_path / "src"
    src.mkdir()
    for name, chars in (("a", 300), ("b", 3000), ("c", 6700)):  # any one of them: 3-67% of all
        (src / f"{name}.txt").write_text("".join(random.Random(chars).choices(WORDS, k=chars // 4)))
    prepare(_cfg(source=str(src), out=str(tmp_path / "d"), tokenizer={"kind": "char"}))
    (warning,) = [r.getMessage() for r in caplog.records if "val holds" in r.getMessage()]
    assert "not the 10% of split.val_fraction" in warning and "3 of unequal size" in warning
    caplog.clear()
    prepare(_cfg(source=str(_write_corpus(tmp_path / "many")), out=str(tmp_path / "d2")))
    assert not [r for r in caplog.records if "val holds" in r.getMessage()]


def test_tinyshakespeare_char_tail_split(shared_data, tmp_path):
    path = shared_data / "tinyshakespeare" / "input.txt"
    text = path.read_text(encoding="utf-8")
    prepare(_cfg(source=str(path), out=str(tmp_path / "ts"), tokenizer={"kind": "char"}))
    data = DataDir.open(tmp_path / "ts")
    assert data.vocab_size == 65 + 2 and data.eot_id == 65
    assert data.meta["split"]["by"] == "tail"
    cut = int(len(text) * 0.9)  # nanoGPT's split
    assert data.num_tokens("train") == cut + 1 and data.num_tokens("val") == len(text) - cut + 1
    assert data.decode("train", 0, 200) == text[:200]
    assert data.decode("val", 0, data.num_tokens("val")) == text[cut:] + EOT
    assert default_out([str(path)]) == "data/tinyshakespeare"


def test_workers_give_byte_identical_shards(tmp_path, monkeypatch):
    src = _write_corpus(tmp_path / "src", num_docs=12)
    big = " ".join(random.Random(1).choices(WORDS, k=30000)).replace(" in ", "\nin ")
    (src / "big.txt").write_text(big)  # one long document, cut into many chunks
    monkeypatch.setattr(encode, "CHUNK_CHARS", 4000)
    monkeypatch.setattr(encode, "TASK_CHARS", 10000)
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        result = prepare(_cfg(source=str(src), out=str(out), workers=workers))
        assert json.loads((out / "stats.json").read_text())["workers"] == workers
        outs.append((out, result))
    (one, r1), (two, r2) = outs
    assert r1.meta["tokens"] == r2.meta["tokens"]
    for name in ("tokenizer.json", "train_000.bin", "val_000.bin"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    docs = _split_docs(DataDir.open(one), "train") + _split_docs(DataDir.open(one), "val")
    assert big in docs


def test_rerun_is_noop_and_changes_need_overwrite(tmp_path, capsys):
    src = _write_corpus(tmp_path / "src", num_docs=5)
    cfg = _cfg(source=str(src), out=str(tmp_path / "d"))
    first = prepare(cfg)
    again = prepare(cfg.model_copy(update={"workers": 3}))  # workers never change the output
    assert again.up_to_date and again.meta["created"] == first.meta["created"]
    changed = _cfg(source=str(src), out=str(tmp_path / "d"), split={"seed": 7})
    with pytest.raises(
        ConfigError,
        match=r"built with different config \(split.seed: 1337 -> 7\); pass --overwrite",
    ):
        prepare(changed)
    rebuilt = prepare(changed, overwrite=True)
    assert not rebuilt.up_to_date and rebuilt.meta["split"]["seed"] == 7
    (src / "doc000.txt").write_text("edited")
    with pytest.raises(ConfigError, match="different source files"):
        prepare(changed)
    assert not list(tmp_path.glob("d.*"))  # no temp or old dirs left behind


def test_interrupted_run_leaves_nothing_complete_and_resumes(tmp_path, monkeypatch):
    src = _write_corpus(tmp_path / "src", num_docs=60)
    reference = prepare(_cfg(source=str(src), out=str(tmp_path / "ref")))
    out = tmp_path / "d"
    monkeypatch.setattr(spool, "UNIT_BYTES", 300)  # many units
    calls = []
    real = units.tokenise_unit

    def interrupted_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(units, "tokenise_unit", interrupted_after_three)
        with pytest.raises(KeyboardInterrupt):
            prepare(_cfg(source=str(src), out=str(out)))
    partial = tmp_path / "d.partial"
    assert not out.exists() and len(list((partial / "units").glob("*.json"))) == 3
    with pytest.raises(DataError, match="does not exist"):
        DataDir.open(out)
    # The same command again: no flag, the three finished units are skipped.
    result = prepare(_cfg(source=str(src), out=str(out)))
    assert result.stats["resumed_units"] == 3 and result.stats["units"] > 3
    assert "resumed an interrupted build: 3 of" in format_report(result)
    assert not partial.exists()
    for name in ("tokenizer.json", "train_000.bin", "val_000.bin"):
        assert (out / name).read_bytes() == (reference.out / name).read_bytes()
    # Another config discards a partial build instead of resuming it.
    with monkeypatch.context() as patch:
        patch.setattr(units, "tokenise_unit", interrupted_after_three)
        with pytest.raises(KeyboardInterrupt):
            prepare(_cfg(source=str(src), out=str(tmp_path / "e")))
    changed = prepare(_cfg(source=str(src), out=str(tmp_path / "e"), split={"seed": 3}))
    assert changed.stats["resumed_units"] == 0
    # A run killed outright by an older lmforge left a temp dir; the next run removes it.
    stale = tmp_path / "f.tmp-999999999"
    stale.mkdir()
    (stale / "meta.json").write_text("{}")
    prepare(_cfg(source=str(src), out=str(tmp_path / "f")))
    assert not stale.exists()


def test_out_that_is_not_a_data_dir_is_refused(tmp_path):
    src = _write_corpus(tmp_path / "src", num_docs=3)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not an lmforge data dir"):
        prepare(_cfg(source=str(src), out=str(tmp_path / "d")), overwrite=True)


def test_empty_and_fully_filtered_corpora(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"empty.txt is empty \(0 bytes\)"):
        prepare(_cfg(source=str(tmp_path / "empty.txt"), out=str(tmp_path / "d")))
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no documents in source .*blank.jsonl"):
        prepare(_cfg(source=str(tmp_path / "blank.jsonl"), out=str(tmp_path / "d")))
    src = _write_corpus(tmp_path / "src", num_docs=3)
    with pytest.raises(DataError, match="all 3 documents"):
        prepare(_cfg(source=str(src), out=str(tmp_path / "d"), clean={"min_chars": 10**6}))
    assert not (tmp_path / "d").exists()
    assert not (tmp_path / "d.partial").exists()  # nothing worth resuming is not kept


def test_bad_bytes_counts_reach_stats_and_report(tmp_path):
    src = _write_corpus(tmp_path / "src", num_docs=4)
    (src / "latin1.txt").write_bytes(b"caf\xe9 and more text\n")
    (src / "blob.txt").write_bytes(b"\x89PNG\x00\x00")
    with pytest.raises(DataError, match="not valid UTF-8|NUL byte"):
        prepare(_cfg(source=str(src), out=str(tmp_path / "d")))
    result = prepare(_cfg(source=str(src), out=str(tmp_path / "d"), encoding_errors="skip"))
    assert result.stats["read"]["skipped_files"] == 2
    assert "encoding_errors=skip: 2 files skipped" in format_report(result)
    result = prepare(_cfg(source=str(src), out=str(tmp_path / "r"), encoding_errors="replace"))
    assert result.stats["read"]["replaced"] == 1 + 2 + 1  # é byte, two NULs, the \x89 byte


def test_vocab_too_small_and_unknown_chars(tmp_path):
    src = _write_corpus(tmp_path / "src", num_docs=3)
    with pytest.raises(ConfigError, match="vocab_size=200 is too small.*256 bytes"):
        prepare(_cfg(source=str(src), out=str(tmp_path / "d"), tokenizer={"vocab_size": 200}))
    capped = {"kind": "char", "vocab_size": 10, "unknown": "error"}
    with pytest.raises(DataError, match="characters outside the tokenizer's vocabulary"):
        prepare(_cfg(source=str(src), out=str(tmp_path / "d"), tokenizer=capped))
    capped["unknown"] = "unk"
    result = prepare(_cfg(source=str(src), out=str(tmp_path / "d"), tokenizer=capped))
    assert result.stats["unknown_tokens"] > 0 and result.meta["vocab_size"] == 10
    assert "mapped to <unk>" in format_report(result)


def test_jsonl_dedup_table_and_gpt2_tokenizer(shared_data, tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"text": t} for t in ("Hello world", "Hello world", "other doc", "third one")]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    gpt2 = {"kind": "gpt2", "path": str(shared_data / "gpt2_bpe")}
    cfg = _cfg(
        source=str(path), out=str(tmp_path / "g"), tokenizer=gpt2, clean={"dedup": True},
        split={"val_fraction": 0.0},
    )  # fmt: skip
    result = prepare(cfg)
    assert result.meta["vocab_size"] == 50257 and result.meta["eot_id"] == 50256
    dedup = [s for s in result.stats["clean"] if s["name"] == "dedup"][0]
    assert (dedup["docs_in"], dedup["docs_out"]) == (4, 3)
    data = DataDir.open(tmp_path / "g")
    assert data.splits == ["train"] and data.shards("val") == []
    assert data.tokens("train", 0, 3).tolist() == [15496, 995, 50256]


def test_plan_split_is_seeded_and_never_empty():
    a, b = plan_split(100, 0.1, 1), plan_split(100, 0.1, 1)
    assert np.array_equal(a, b) and a.sum() == 10
    assert plan_split(2, 0.01, 0).sum() == 1 and plan_split(5, 0.0, 0).sum() == 0


def test_default_out_names():
    assert default_out(["pydocs"]) == "data/pydocs"
    assert default_out(["corpus/*.txt"]) == "data/corpus"
    assert default_out(["url:https://h/x/books.jsonl.gz#sha256=" + "0" * 64]) == "data/books"
    assert default_out([os.path.join("a", "b", "notes.md")]) == "data/notes"


def test_bpe_trains_on_a_seeded_bounded_sample(tmp_path):
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(400)]
    total = sum(len(t.encode()) for t in texts)
    assert list(training_sample(iter(texts), total, total, seed=1)) == texts  # it all fits
    sample = list(training_sample(iter(texts), total, total // 4, seed=1))
    assert sample == list(training_sample(iter(texts), total, total // 4, seed=1))
    assert sample != list(training_sample(iter(texts), total, total // 4, seed=2))
    assert total // 8 < sum(len(t.encode()) for t in sample) <= total // 4
    assert set(sample) < set(texts)
    # Through prepare: a budget below the corpus trains on a sample, the same for any workers.
    src = _write_corpus(tmp_path / "src", num_docs=40)
    outs = [
        prepare(_cfg(source=str(src), out=str(tmp_path / f"w{w}"), workers=w,
                     tokenizer={"kind": "bpe", "vocab_size": 300, "train_bytes": 2000}))
        for w in (1, 2)
    ]  # fmt: skip
    full = prepare(_cfg(source=str(src), out=str(tmp_path / "full")))
    tokenizers_json = [(r.out / "tokenizer.json").read_bytes() for r in (*outs, full)]
    assert tokenizers_json[0] == tokenizers_json[1] != tokenizers_json[2]
