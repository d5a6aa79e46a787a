"""Shard format: write -> read round trip, roll-over, and a clear error for every bad header."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from lmforge.data.shards import (
    HEADER_BYTES,
    SplitWriter,
    dtype_for_vocab,
    read_header,
    read_shard,
    write_shard,
)
from lmforge.errors import ShardFormatError


@pytest.mark.parametrize("vocab_size", [256, 65536, 65537])
def test_round_trip(tmp_path, vocab_size):
    dtype = dtype_for_vocab(vocab_size)
    tokens = np.random.default_rng(0).integers(0, vocab_size, size=1000).astype(dtype)
    write_shard(tmp_path / "s.bin", tokens)
    back = read_shard(tmp_path / "s.bin")
    assert back.dtype == dtype and np.array_equal(back, tokens)
    assert not back.flags.writeable
    assert (tmp_path / "s.bin").stat().st_size == HEADER_BYTES + tokens.nbytes


def test_split_writer_rolls_over(tmp_path):
    writer = SplitWriter(tmp_path, "train", np.dtype("uint16"), shard_tokens=7)
    for start in range(0, 20, 3):
        writer.write(np.arange(start, min(start + 3, 20)))
    paths = writer.close()
    assert [p.name for p in paths] == ["train_000.bin", "train_001.bin", "train_002.bin"]
    assert [len(read_shard(p)) for p in paths] == [7, 7, 6]
    assert np.array_equal(np.concatenate([read_shard(p) for p in paths]), np.arange(20))


def test_empty_writer_writes_nothing(tmp_path):
    assert SplitWriter(tmp_path, "val", np.dtype("uint16"), 10).close() == []


def _corrupt(path, offset, data):
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def test_bad_headers_raise_clear_errors(tmp_path):
    path = tmp_path / "s.bin"
    write_shard(path, np.arange(10, dtype=np.uint16))
    _corrupt(path, 0, b"NOTSHARD")
    with pytest.raises(ShardFormatError, match="has magic b'NOTSHARD'"):
        read_shard(path)

    write_shard(path, np.arange(10, dtype=np.uint16))
    _corrupt(path, 8, struct.pack("<I", 99))
    with pytest.raises(ShardFormatError, match="format version 99"):
        read_header(path)

    write_shard(path, np.arange(10, dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ShardFormatError, match="promises 10 tokens"):
        read_shard(path)

    path.write_bytes(b"LMF")
    with pytest.raises(ShardFormatError, match="truncated"):
        read_shard(path)
    with pytest.raises(ShardFormatError, match="missing"):
        read_shard(tmp_path / "nope.bin")
