"""Reading a data dir: validated `meta.json`, memmapped shards, token counts, decoding spans.

This is what the trainer, eval and the batch loader use; it never writes. A split is the
concatenation of its shards in order (documents end with `<|endoftext|>` and may cross shards).
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.shards import read_shard
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import DataError, ShardFormatError

DATA_FORMAT_VERSION = 1
_REQUIRED = ("format_version", "vocab_size", "eot_id", "dtype", "tokens", "shards")


class DataDir:
    """An opened data dir; use `DataDir.open(path)`."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self._shards: dict[str, list[np.ndarray]] = {}

    @classmethod
    def open(cls, path: str | Path) -> DataDir:
        path = Path(path)
        if path.is_file():
            raise DataError(
                f"data={path} is a file, not a data dir; turn it into one first with 'lmforge "
                f"prepare {path} out=data/{path.stem}', then train with data=data/{path.stem}"
            )
        if not path.is_dir():
            raise DataError(
                f"data dir {path} does not exist; create it with 'lmforge prepare ... out={path}'"
            )
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise DataError(
                f"{path} is not a complete data dir (no meta.json); re-run 'lmforge prepare "
                f"out={path} --overwrite'"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(
                f"{meta_path} is not valid JSON ({exc}); re-run 'lmforge prepare'"
            ) from None
        missing = [k for k in _REQUIRED if k not in meta]
        if missing:
            raise DataError(f"{meta_path} lacks {', '.join(missing)}; re-run 'lmforge prepare'")
        if meta["format_version"] != DATA_FORMAT_VERSION:
            raise DataError(
                f"{path} has data format version {meta['format_version']} (this lmforge reads "
                f"{DATA_FORMAT_VERSION}); re-run 'lmforge prepare --overwrite' or upgrade lmforge"
            )
        return cls(path, meta)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eot_id(self) -> int:
        return int(self.meta["eot_id"])

    @cached_property
    def tokenizer(self) -> Tokenizer:
        tokenizer = Tokenizer.from_file(
            self.path / "tokenizer.json", self.meta.get("tokenizer_kind")
        )
        expected = self.meta.get("tokenizer_hash")
        if expected and tokenizer.hash != expected:
            raise DataError(
                f"{self.path}/tokenizer.json does not match meta.json (hash {tokenizer.hash[:12]} "
                f"vs {expected[:12]}); it was edited or replaced — re-run 'lmforge prepare "
                "--overwrite'"
            )
        return tokenizer

    @property
    def splits(self) -> list[str]:
        """Splits that hold tokens, e.g. `["train", "val"]`."""
        return [s for s, n in self.meta["tokens"].items() if n > 0]

    def shards(self, split: str) -> list[np.ndarray]:
        """Read-only 1-D memmaps of the split's shards, header skipped, in order."""
        if split not in self.meta["shards"]:
            raise DataError(f"{self.path} has no split '{split}'; it has {', '.join(self.splits)}")
        if split not in self._shards:
            arrays = [read_shard(self.path / name) for name in self.meta["shards"][split]]
            self._check(split, arrays)
            self._shards[split] = arrays
        return self._shards[split]

    def _check(self, split: str, arrays: list[np.ndarray]) -> None:
        total = sum(len(a) for a in arrays)
        if total != self.meta["tokens"][split]:
            raise ShardFormatError(
                f"{self.path} split '{split}' has {total} tokens in its shards but meta.json says "
                f"{self.meta['tokens'][split]}; re-run 'lmforge prepare --overwrite'"
            )
        for name, array in zip(self.meta["shards"][split], arrays, strict=True):
            if array.dtype.name != self.meta["dtype"]:
                raise ShardFormatError(
                    f"{self.path / name} holds {array.dtype.name} but meta.json says "
                    f"{self.meta['dtype']}; re-run 'lmforge prepare --overwrite'"
                )

    def num_tokens(self, split: str) -> int:
        return int(self.meta["tokens"].get(split, 0))

    def tokens(self, split: str, start: int, end: int) -> np.ndarray:
        """Tokens `[start, end)` of the split as one array (copied across shard borders)."""
        total = self.num_tokens(split)
        if not 0 <= start <= end <= total:
            raise DataError(f"span [{start}, {end}) is outside split '{split}' (0..{total})")
        pieces, offset = [], 0
        for array in self.shards(split):
            lo, hi = max(start - offset, 0), min(end - offset, len(array))
            if lo < hi:
                pieces.append(np.asarray(array[lo:hi]))
            offset += len(array)
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=self.meta["dtype"])

    def decode(self, split: str, start: int, end: int) -> str:
        """Text of tokens `[start, end)` of the concatenated split."""
        return self.tokenizer.decode(self.tokens(split, start, end).tolist())

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={self.num_tokens(s):,}" for s in self.splits)
        return f"DataDir({str(self.path)!r}, vocab_size={self.vocab_size}, {counts})"
