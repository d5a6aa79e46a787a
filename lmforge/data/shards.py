"""The token shard file format: a fixed 64-byte header, then the tokens as uint16 or uint32.

Header (little-endian): magic `LMFSHARD` (8 bytes), format version (u32), dtype code (u32: 2 =
uint16, 4 = uint32, i.e. bytes per token), token count (u64), zero padding to 64 bytes. Owns
writing (with roll-over into `train_000.bin`, `train_001.bin`, ...) and validated memmap reading;
not what the tokens mean (that is `meta.json`, see `reader.py`). Same spirit as llm.c's headers.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lmforge.errors import ShardFormatError

MAGIC = b"LMFSHARD"
SHARD_FORMAT_VERSION = 1
HEADER_BYTES = 64
_HEADER = struct.Struct("<8sIIQ")  # magic, version, dtype code, token count
_DTYPES: dict[int, np.dtype] = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536), else uint32."""
    return _DTYPES[2] if vocab_size <= 2**16 else _DTYPES[4]


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:03d}.bin"


def _header(dtype: np.dtype, count: int) -> bytes:
    return _HEADER.pack(MAGIC, SHARD_FORMAT_VERSION, dtype.itemsize, count).ljust(
        HEADER_BYTES, b"\0"
    )


def write_shard(path: str | Path, tokens: np.ndarray, dtype: np.dtype | None = None) -> None:
    """Write one complete shard (used by tests and small tools; prepare streams via SplitWriter)."""
    dtype = np.dtype(dtype or tokens.dtype).newbyteorder("<")
    if dtype.itemsize not in _DTYPES:
        raise ValueError(f"shard dtype must be uint16 or uint32, not {dtype}")
    with open(path, "wb") as f:
        f.write(_header(dtype, len(tokens)))
        f.write(np.ascontiguousarray(tokens, dtype=dtype).tobytes())


class SplitWriter:
    """Streams one split's tokens into numbered shards of at most `shard_tokens` tokens each."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.directory = directory
        self.split = split
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.shard_tokens = shard_tokens
        self.paths: list[Path] = []
        self.num_tokens = 0
        self._file: BinaryIO | None = None
        self._in_shard = 0

    def write(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens, dtype=self.dtype)
        while len(tokens):
            if self._file is None or self._in_shard == self.shard_tokens:
                self._open_next()
            room = self.shard_tokens - self._in_shard
            head, tokens = tokens[:room], tokens[room:]
            assert self._file is not None
            self._file.write(head.tobytes())
            self._in_shard += len(head)
            self.num_tokens += len(head)

    def _open_next(self) -> None:
        self._finish()
        path = self.directory / shard_name(self.split, len(self.paths))
        self._file = open(path, "wb")  # closed in _finish
        self._file.write(_header(self.dtype, 0))  # the count is patched in when the shard closes
        self.paths.append(path)
        self._in_shard = 0

    def _finish(self) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.write(_header(self.dtype, self._in_shard))
            self._file.close()
            self._file = None

    def close(self) -> list[Path]:
        self._finish()
        return self.paths


def read_header(path: Path) -> tuple[np.dtype, int]:
    """(dtype, token count) of a shard, or a ShardFormatError naming what is wrong."""
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise ShardFormatError(f"shard {path} is missing; re-run 'lmforge prepare'") from None
    if len(raw) < HEADER_BYTES:
        raise ShardFormatError(
            f"shard {path} is truncated ({len(raw)} bytes, header needs {HEADER_BYTES}); "
            "re-run 'lmforge prepare --overwrite'"
        )
    magic, version, code, count = _HEADER.unpack(raw[: _HEADER.size])
    if magic != MAGIC:
        raise ShardFormatError(
            f"shard {path} has magic {magic!r} (expected {MAGIC!r}); it is not an lmforge shard — "
            "re-run 'lmforge prepare'"
        )
    if version != SHARD_FORMAT_VERSION:
        raise ShardFormatError(
            f"shard {path} has format version {version} (this lmforge reads "
            f"{SHARD_FORMAT_VERSION}); re-run 'lmforge prepare --overwrite' or upgrade lmforge"
        )
    if code not in _DTYPES:
        raise ShardFormatError(f"shard {path} has unknown dtype code {code} (expected 2 or 4)")
    return _DTYPES[code], count


def read_shard(path: str | Path) -> np.ndarray:
    """A read-only 1-D memmap of the shard's tokens (header skipped), checked against its size."""
    path = Path(path)
    dtype, count = read_header(path)
    expected = HEADER_BYTES + count * dtype.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise ShardFormatError(
            f"shard {path} is {actual} bytes but its header promises {count} tokens "
            f"({expected} bytes); it was cut short or overwritten — re-run 'lmforge prepare "
            "--overwrite'"
        )
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(count,))
