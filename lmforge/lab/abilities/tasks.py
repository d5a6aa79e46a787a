"""Synthetic ability tasks, generated from a seed, with train and test disjoint by construction.

Each task is a set of fixed-length token sequences plus two masks over the next-token targets:
`loss_mask` (what training minimises) and `answer_mask` (what the metrics score).
- `modular`: `a op b = c` with c = (a op b) mod p (grokking, Power et al. 2022). Every pair
  (a, b) is in exactly one split: the pairs are shuffled once and cut at `train_fraction`.
- `addition`: `a + b = s`, fixed width with leading zeros, answer digits plain or reversed
  (least significant first). A pair is a test pair iff a seeded hash puts it there, so a
  training pair can never be a test pair.
- `induction`: uniform random tokens in which a segment of varying length L recurs after a
  random gap, at a random place after at least `min_prefix` tokens (Olsson et al. 2022's
  repeated random tokens). The in-context score compares the loss on the segment's first
  occurrence with the loss on its repeat; the random context before the first occurrence lowers
  what "boost a token seen before" (within a 1-layer model's reach) gains there (not to zero:
  docs/lab.md), the varying length and gap defeat "copy from a fixed distance back". Segments
  split by a seeded hash.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from lmforge.errors import ConfigError

_DEFAULTS: dict[str, dict[str, Any]] = {
    "modular": {"p": 97, "op": "+", "train_fraction": 0.3},
    "addition": {"digits": 3, "reverse": False, "train_examples": 10000, "test_examples": 1000},
    "induction": {
        "vocab": 24,
        "seq_len": 80,
        "min_repeat": 12,
        "max_repeat": 20,
        "max_gap": 24,
        "min_prefix": 16,
        "train_examples": 4096,
        "test_examples": 512,
    },  # fmt: skip
}


@dataclass
class TaskData:
    """Sequences (n, T) and masks over their targets (n, T-1) for both splits."""

    name: str
    vocab: list[str]
    train: torch.Tensor
    test: torch.Tensor
    train_loss_mask: torch.Tensor
    test_loss_mask: torch.Tensor
    train_answer_mask: torch.Tensor
    test_answer_mask: torch.Tensor
    answer_start: int | None  # the first answer position when it is the same for every example
    params: dict[str, Any]
    # Induction only: the targets of the segment's first occurrence (after its first token),
    # the "early" half of the in-context score; the answer mask is the repeat, the "late" half.
    train_early_mask: torch.Tensor | None = None
    test_early_mask: torch.Tensor | None = None

    @property
    def seq_len(self) -> int:
        return self.train.size(1)


def task_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The task's defaults updated by `params`; an unknown key is a ConfigError."""
    if name not in _DEFAULTS:
        raise ConfigError(f"ability.task={name!r} is not known; use one of {', '.join(_DEFAULTS)}")
    unknown = sorted(set(params) - set(_DEFAULTS[name]))
    if unknown:
        raise ConfigError(
            f"ability.params has {', '.join(unknown)}, which task {name} does not take; "
            f"its keys: {', '.join(_DEFAULTS[name])}"
        )
    return {**_DEFAULTS[name], **params}


def make_task(
    name: str, params: dict[str, Any], seed: int, examples: int | None = None
) -> TaskData:
    """The task `name` with `params`; `examples` overrides the training-set size."""
    full = task_params(name, params)
    if examples is not None:
        if name == "modular":
            raise ConfigError(
                "the modular task's training-set size is params.train_fraction; leave "
                "ability.examples unset"
            )
        full["train_examples"] = examples
    builder = {"modular": _modular, "addition": _addition, "induction": _induction}[name]
    return builder(full, seed)


def split_hash(key: tuple[int, ...], seed: int) -> float:
    """A number in [0, 1) fixed by `key` and `seed`: which split an example belongs to."""
    digest = hashlib.blake2b(repr((seed, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


# -- modular arithmetic ---------------------------------------------------------------------------


def _modular(params: dict[str, Any], seed: int) -> TaskData:
    p, op, fraction = int(params["p"]), params["op"], float(params["train_fraction"])
    if p < 2 or not 0 < fraction < 1:
        raise ConfigError(f"modular task: need p >= 2 and 0 < train_fraction < 1, got {params}")
    ops = {"+": lambda a, b: (a + b) % p, "-": lambda a, b: (a - b) % p,
           "*": lambda a, b: (a * b) % p}  # fmt: skip
    if op not in ops:
        raise ConfigError(f"modular task: op={op!r} is not one of + - *")
    vocab = [str(i) for i in range(p)] + [op, "="]
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    c = torch.tensor([ops[op](int(x), int(y)) for x, y in zip(a, b, strict=True)])
    rows = torch.stack([a, torch.full_like(a, p), b, torch.full_like(a, p + 1), c], dim=1)
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    cut = round(fraction * p * p)
    return _fixed("modular", vocab, rows[order[:cut]], rows[order[cut:]], 4, params)


# -- multi-digit addition -------------------------------------------------------------------------


def _addition(params: dict[str, Any], seed: int) -> TaskData:
    digits, reverse = int(params["digits"]), bool(params["reverse"])
    n_train, n_test = int(params["train_examples"]), int(params["test_examples"])
    space = 10 ** (2 * digits)
    test_share = max(n_test / space, 0.0)
    if n_train + n_test > space or test_share >= 1:
        raise ConfigError(
            f"addition with {digits} digits has {space} pairs; train_examples + test_examples "
            f"= {n_train + n_test} do not fit. Use more digits or fewer examples"
        )
    # A pair is a test pair iff its hash is under the test share: disjoint by construction.
    share = min(1.0, 1.5 * n_test / space + 1e-9)
    rng = torch.Generator().manual_seed(seed)
    train, test = _sample_pairs(digits, n_train, n_test, share, seed, rng)
    vocab = [str(d) for d in range(10)] + ["+", "="]
    encode = _addition_encoder(digits, reverse)
    return _fixed("addition", vocab, encode(train), encode(test), 2 * digits + 2, params)


def _sample_pairs(
    digits: int, n_train: int, n_test: int, share: float, seed: int, rng: torch.Generator
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    high = 10**digits
    train: dict[tuple[int, int], None] = {}
    test: dict[tuple[int, int], None] = {}
    while len(train) < n_train or len(test) < n_test:
        pairs = torch.randint(0, high, (4096, 2), generator=rng).tolist()
        for a, b in pairs:
            if split_hash((a, b), seed) < share:
                if len(test) < n_test:
                    test[(a, b)] = None
            elif len(train) < n_train:
                train[(a, b)] = None
    return list(train), list(test)


def _addition_encoder(digits: int, reverse: bool) -> Any:
    def encode(pairs: list[tuple[int, int]]) -> torch.Tensor:
        rows = []
        for a, b in pairs:
            answer = [int(ch) for ch in f"{a + b:0{digits + 1}d}"]
            if reverse:
                answer = answer[::-1]
            rows.append([*map(int, f"{a:0{digits}d}"), 10, *map(int, f"{b:0{digits}d}"), 11,
                         *answer])  # fmt: skip
        return torch.tensor(rows, dtype=torch.long)

    return encode


def _fixed(
    name: str,
    vocab: list[str],
    train: torch.Tensor,
    test: torch.Tensor,
    answer_start: int,
    params: dict[str, Any],
) -> TaskData:
    """A task whose answer is the last tokens of every row, from position `answer_start`."""

    def mask(rows: torch.Tensor) -> torch.Tensor:
        m = torch.zeros(rows.size(0), rows.size(1) - 1, dtype=torch.bool)
        m[:, answer_start - 1 :] = True  # target t+1 is predicted at position t
        return m

    return TaskData(name, vocab, train, test, mask(train), mask(test), mask(train), mask(test),
                    answer_start, params)  # fmt: skip


# -- induction ------------------------------------------------------------------------------------


def _induction(params: dict[str, Any], seed: int) -> TaskData:
    V, T = int(params["vocab"]), int(params["seq_len"])
    lo, hi, gap = int(params["min_repeat"]), int(params["max_repeat"]), int(params["max_gap"])
    prefix = int(params["min_prefix"])
    if not 2 <= lo <= hi or V < 2 or gap < 0 or prefix < 0 or prefix + 2 * hi + gap > T:
        raise ConfigError(
            f"induction task: need vocab >= 2, 2 <= min_repeat <= max_repeat, max_gap >= 0, "
            f"min_prefix >= 0 and min_prefix + 2 * max_repeat + max_gap <= seq_len, got "
            f"vocab={V}, min_repeat={lo}, max_repeat={hi}, max_gap={gap}, min_prefix={prefix}, "
            f"seq_len={T}"
        )
    rng = torch.Generator().manual_seed(seed)
    n_train, n_test = int(params["train_examples"]), int(params["test_examples"])
    train: list[tuple[torch.Tensor, int, int, int]] = []  # (row, first start, repeat start, L)
    test: list[tuple[torch.Tensor, int, int, int]] = []
    while len(train) < n_train or len(test) < n_test:
        for row, start, repeat, length in _induction_rows(V, T, lo, hi, gap, prefix, rng):
            if split_hash(tuple(row[start : start + length].tolist()), seed) < 0.1:
                if len(test) < n_test:  # the segment decides the split
                    test.append((row, start, repeat, length))
            elif len(train) < n_train:
                train.append((row, start, repeat, length))

    def pack(items: list[tuple[torch.Tensor, int, int, int]]) -> tuple[torch.Tensor, ...]:
        rows = torch.stack([item[0] for item in items])
        early = torch.zeros(len(items), T - 1, dtype=torch.bool)
        late = torch.zeros(len(items), T - 1, dtype=torch.bool)
        for i, (_, start, repeat, length) in enumerate(items):
            # A copy at C is scored after its first token: its tokens C+1 .. C+L-1 are the
            # targets C .. C+L-2 (target t+1 is predicted at position t).
            early[i, start : start + length - 1] = True
            late[i, repeat : repeat + length - 1] = True
        return rows, early, late

    train_rows, train_early, train_answer = pack(train)
    test_rows, test_early, test_answer = pack(test)
    everything = torch.ones(1, T - 1, dtype=torch.bool)
    return TaskData(
        "induction", [f"t{i}" for i in range(V)], train_rows, test_rows,
        everything.expand(len(train), -1).clone(), everything.expand(len(test), -1).clone(),
        train_answer, test_answer, None, params, train_early, test_early,
    )  # fmt: skip


def _induction_rows(
    V: int, T: int, lo: int, hi: int, gap: int, prefix: int, rng: torch.Generator, n: int = 1024
) -> list[tuple[torch.Tensor, int, int, int]]:
    """`n` rows of uniform random tokens in which a segment of L tokens at C (the first
    occurrence) recurs at R = C + L + G: L in [lo, hi], the gap G in [0, gap], and C at least
    `prefix`, the rest of the slack spread at random before and after the two copies."""
    rows = torch.randint(0, V, (n, T), generator=rng)
    lengths = torch.randint(lo, hi + 1, (n,), generator=rng)
    gaps = torch.randint(0, gap + 1, (n,), generator=rng)
    slack = T - prefix - 2 * lengths - gaps  # >= 0 by the parameter check
    starts = prefix + (torch.rand(n, generator=rng) * (slack + 1)).long().clamp(max=slack)
    repeats = starts + lengths + gaps
    for j in range(hi):  # copy the segment's j-th token where the segment is that long
        has = lengths > j
        rows[has, repeats[has] + j] = rows[has, starts[has] + j]
    return list(zip(rows, starts.tolist(), repeats.tolist(), lengths.tolist(), strict=True))


def segment_lengths(answer_mask: torch.Tensor) -> torch.Tensor:
    """Induction: each row's segment length L (its answer covers L - 1 targets)."""
    return answer_mask.sum(dim=1) + 1


def copy_starts(early_mask: torch.Tensor) -> torch.Tensor:
    """Induction: where each row's first occurrence of the segment starts (its early mask's
    first target)."""
    return early_mask.float().argmax(dim=1)


def repeat_starts(answer_mask: torch.Tensor) -> torch.Tensor:
    """Induction: where each row's repeat of the segment starts (its answer's first target)."""
    return answer_mask.float().argmax(dim=1)


def ln_vocab(data: TaskData) -> float:
    return math.log(len(data.vocab))
