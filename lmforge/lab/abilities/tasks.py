"""Synthetic ability tasks, generated from a seed, with train and test disjoint by construction.

Each task is a set of fixed-length token sequences plus two masks over the next-token targets:
`loss_mask` (what training minimises) and `answer_mask` (what the metrics score).
- `modular`: `a op b = c` with c = (a op b) mod p (grokking, Power et al. 2022). Every pair
  (a, b) is in exactly one split: the pairs are shuffled once and cut at `train_fraction`.
- `addition`: `a + b = s`, fixed width with leading zeros, answer digits plain or reversed
  (least significant first). A pair is a test pair iff a seeded hash puts it there, so a
  training pair can never be a test pair.
- `induction`: a segment of distinct random tokens, of varying length L: its tokens shuffled,
  each followed by a separator, then the segment in order, a random gap, the segment again,
  random filler (Olsson et al. 2022's repeated random tokens; the shuffled intro makes "copy any
  earlier token" help both in-order copies alike, the gap defeats "copy from a fixed distance
  back"). Segments split by a seeded hash.
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
        "vocab": 32,
        "seq_len": 64,
        "min_repeat": 6,
        "max_repeat": 12,
        "max_gap": 12,
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
    if not 2 <= lo <= hi <= V or 4 * hi + gap > T or gap < 0:
        raise ConfigError(
            f"induction task: need 2 <= min_repeat <= max_repeat <= vocab, max_gap >= 0 and "
            f"4 * max_repeat + max_gap <= seq_len, got min_repeat={lo}, max_repeat={hi}, "
            f"max_gap={gap}, vocab={V}, seq_len={T}"
        )
    vocab = [f"t{i}" for i in range(V)] + ["sep"]
    sep = V
    rng = torch.Generator().manual_seed(seed)
    n_train, n_test = int(params["train_examples"]), int(params["test_examples"])
    train, test = [], []
    while len(train) < n_train or len(test) < n_test:
        length = int(torch.randint(lo, hi + 1, (), generator=rng))
        between = int(torch.randint(0, gap + 1, (), generator=rng))
        segment = torch.randperm(V, generator=rng)[:length]  # distinct tokens: one match each
        # The segment's tokens first, shuffled, each followed by `sep`: so "copy a token seen
        # earlier" helps both in-order copies alike, and copying what followed a token there
        # (sep) is never right. Then the segment, a random gap, the segment again, filler.
        intro = torch.stack([segment[torch.randperm(length, generator=rng)],
                             torch.full((length,), sep)], dim=1).flatten()  # fmt: skip
        filler = torch.randint(0, V, (T - 4 * length,), generator=rng)
        row = torch.cat([intro, segment, filler[:between], segment, filler[between:]])
        if split_hash(tuple(segment.tolist()), seed) < 0.1:  # the segment decides the split
            if len(test) < n_test:
                test.append((row, length, between))
        elif len(train) < n_train:
            train.append((row, length, between))

    def pack(items: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.stack([r for r, _, _ in items])
        answer = torch.zeros(len(items), T - 1, dtype=torch.bool)
        for i, (_, length, between) in enumerate(items):
            # The repeat starts at R = 3L + gap; predicting its tokens after the first
            # (positions R+1 .. R+L-1) are targets R .. R+L-2.
            start = 3 * length + between
            answer[i, start : start + length - 1] = True
        return rows, answer

    train_rows, train_answer = pack(train)
    test_rows, test_answer = pack(test)
    everything = torch.ones(1, T - 1, dtype=torch.bool)
    return TaskData(
        "induction", vocab, train_rows, test_rows,
        everything.expand(len(train), -1).clone(), everything.expand(len(test), -1).clone(),
        train_answer, test_answer, None, params,
    )  # fmt: skip


def segment_lengths(answer_mask: torch.Tensor) -> torch.Tensor:
    """Induction: each row's segment length L (its answer covers L - 1 targets)."""
    return answer_mask.sum(dim=1) + 1


def copy_starts(answer_mask: torch.Tensor) -> torch.Tensor:
    """Induction: where each row's first in-order copy of the segment starts (2L)."""
    return 2 * segment_lengths(answer_mask)


def repeat_starts(answer_mask: torch.Tensor) -> torch.Tensor:
    """Induction: where each row's repeat of the segment starts (3L + gap)."""
    return answer_mask.float().argmax(dim=1)


def ln_vocab(data: TaskData) -> float:
    return math.log(len(data.vocab))
