"""Training batches from token shards: deterministic, resumable, DDP-rank aware.

Owns batching only (shards are read by `reader.py`). One optimizer step consumes a *global batch*
of `rows = batch_size * accum_steps * world_size` windows of `seq_len + 1` tokens; each rank takes
its own rows, micro-step by micro-step, so a 2-rank run sees exactly the rows a 1-process run with
2x accumulation sees. Two modes: `random` windows (re-drawn each step from a generator seeded by
(seed, step), so the position is one integer) and `sequential` contiguous streams, one per row,
for truncated BPTT (an LSTM carries its state from one window of a row to the next).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from lmforge.errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor]  # inputs (B, T), targets (B, T), int64


class BatchSource(Protocol):
    """What the trainer pulls from: one list of micro-batches per optimizer step."""

    def next_batches(self) -> list[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TokenLoader:
    """Windows of `seq_len + 1` tokens from the concatenation of `shards`."""

    def __init__(
        self,
        shards: Sequence[np.ndarray],
        seq_len: int,
        batch_size: int,
        accum_steps: int = 1,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        sequential: bool = False,
        split: str = "train",
    ) -> None:
        self.shards = [s for s in shards if len(s)]
        self.seq_len, self.batch_size, self.accum_steps = seq_len, batch_size, accum_steps
        self.world_size, self.rank, self.seed, self.sequential = world_size, rank, seed, sequential
        self.rows = batch_size * accum_steps * world_size
        self._ends = np.cumsum([len(s) for s in self.shards])
        self.num_tokens = int(self._ends[-1]) if self.shards else 0
        self.step = 0
        if self.num_tokens < seq_len + 1:
            raise DataError(
                f"split '{split}' has {self.num_tokens} tokens, fewer than seq_len+1 = "
                f"{seq_len + 1}; use a smaller train.seq_len or more data"
            )
        # Sequential mode: row j streams through its own segment [j*seg_len, (j+1)*seg_len).
        self._seg_len = self.num_tokens // self.rows
        if sequential and self._seg_len < seq_len + 1:
            raise DataError(
                f"split '{split}' has {self.num_tokens} tokens, too few for {self.rows} streams "
                f"of seq_len+1 = {seq_len + 1}; lower train.batch_size or train.seq_len"
            )

    def next_batches(self) -> list[Batch]:
        """This rank's `accum_steps` micro-batches for the next optimizer step."""
        starts = self._row_starts(self.step)
        self.step += 1
        micro = []
        for m in range(self.accum_steps):
            # Global row index = m * (world * B) + rank * B + b (see the module docstring).
            first = (m * self.world_size + self.rank) * self.batch_size
            windows = np.stack([self._read(s) for s in starts[first : first + self.batch_size]])
            tokens = torch.from_numpy(windows.astype(np.int64))  # (B, T + 1)
            micro.append((tokens[:, :-1], tokens[:, 1:]))
        return micro

    def _row_starts(self, step: int) -> np.ndarray:
        if self.sequential:
            per_segment = (self._seg_len - 1) // self.seq_len
            offset = (step % per_segment) * self.seq_len
            return np.arange(self.rows, dtype=np.int64) * self._seg_len + offset
        # A generator per step makes the position a single integer and resume exact.
        rng = np.random.default_rng([self.seed, step])
        return rng.integers(0, self.num_tokens - self.seq_len, size=self.rows, dtype=np.int64)

    def _read(self, start: int) -> np.ndarray:
        """Tokens [start, start + seq_len + 1) of the concatenated shards."""
        length = self.seq_len + 1
        i = int(np.searchsorted(self._ends, start, side="right"))
        local = start - (int(self._ends[i - 1]) if i else 0)
        piece = self.shards[i][local : local + length]
        if len(piece) == length:
            return piece
        parts = [piece]  # the window crosses into the next shard(s)
        need = length - len(piece)
        while need > 0:
            i += 1
            parts.append(self.shards[i][:need])
            need -= len(parts[-1])
        return np.concatenate(parts)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "seed": self.seed,
            "rows": self.rows,
            "seq_len": self.seq_len,
            "sequential": self.sequential,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        same = all(state.get(k) == getattr(self, k) for k in ("seed", "rows", "seq_len"))
        if not same and self.sequential:
            # Streams are laid out by row count and window length; the old position is meaningless.
            self.step = 0
            return
        self.step = int(state["step"])
