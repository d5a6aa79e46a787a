"""DataDir: opening checks, memmapped shards, spans across shard borders, tamper detection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmforge.config import build_config
from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.data.reader import DataDir
from lmforge.errors import DataError, ShardFormatError

TEXT = "".join(f"Line {i}: the reader must see every byte, even ü and 字.\n" for i in range(300))


@pytest.fixture
def data_dir(tmp_path):
    src = tmp_path / "one.txt"
    src.write_text(TEXT)
    cfg = build_config(
        PrepareConfig,
        overrides={"source": str(src), "out": str(tmp_path / "d"), "tokenizer": {"kind": "byte"},
                   "shard_tokens": 1000},
    )  # fmt: skip
    prepare(cfg)
    return tmp_path / "d"


def test_shards_and_spans(data_dir):
    data = DataDir.open(data_dir)
    shards = data.shards("train")
    assert len(shards) > 3 and all(not s.flags.writeable for s in shards)
    assert all(s.dtype == np.uint16 and s.ndim == 1 for s in shards)
    cut = int(len(TEXT) * 0.9)
    train_bytes = TEXT[:cut].encode()
    assert data.num_tokens("train") == len(train_bytes) + 1
    # A span that crosses shard borders decodes like the same slice of the source bytes.
    assert data.tokens("train", 990, 2010).tolist() == list(train_bytes[990:2010])
    first_line = TEXT.split("\n")[0] + "\n"
    assert data.decode("train", 0, len(first_line.encode())) == first_line
    assert data.eot_id == 256 and data.vocab_size == 257
    assert "train=" in repr(data)
    with pytest.raises(DataError, match="outside split 'train'"):
        data.tokens("train", 0, 10**9)
    with pytest.raises(DataError, match="has no split 'test'"):
        data.shards("test")


def test_open_errors_name_the_fix(tmp_path, data_dir):
    with pytest.raises(DataError, match="does not exist; create it with 'lmforge prepare"):
        DataDir.open(tmp_path / "nowhere")
    (tmp_path / "partial").mkdir()
    with pytest.raises(DataError, match="not a complete data dir"):
        DataDir.open(tmp_path / "partial")
    meta = json.loads((data_dir / "meta.json").read_text())
    (data_dir / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(DataError, match="data format version 99"):
        DataDir.open(data_dir)


def test_tampering_is_detected(data_dir):
    meta = json.loads((data_dir / "meta.json").read_text())
    (data_dir / "meta.json").write_text(json.dumps({**meta, "tokens": {"train": 5, "val": 1}}))
    with pytest.raises(ShardFormatError, match="meta.json says 5"):
        DataDir.open(data_dir).shards("train")
    (data_dir / "meta.json").write_text(json.dumps({**meta, "tokenizer_hash": "0" * 64}))
    with pytest.raises(DataError, match="does not match meta.json"):
        DataDir.open(data_dir).tokenizer  # noqa: B018 - the property raises
