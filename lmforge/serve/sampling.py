"""Sampling one token for every row of a decode batch, each row with its own settings.

Rows of one batch belong to different requests, so temperature, top-k and top-p are per-row
vectors here (the filters of `lmforge.infer.sampling`, vectorised), and each row draws from its
own `torch.Generator`: a seeded request samples the same tokens whatever shares its batch.
Greedy rows (temperature 0) take the argmax and never touch a generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RowSampling:
    """One row's sampling settings. `top_k=0` and `top_p=1` are off; `temperature=0` is greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filter_logits(logits: torch.Tensor, rows: Sequence[RowSampling]) -> torch.Tensor:
    """Temperature-scaled logits (B, V) with each row's top-k/top-p cut applied (-inf outside).

    One sort serves both filters and is only paid when some row uses one of them.
    """
    temps = torch.tensor([r.temperature or 1.0 for r in rows], device=logits.device)
    # Shifting by the row max first changes no probability, and keeps a tiny temperature from
    # overflowing the best logit to +inf (whose softmax would be NaN): it stays 0.
    logits = logits.float()
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temps[:, None]
    if all(r.top_k <= 0 and r.top_p >= 1.0 for r in rows):
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V)
    V = logits.size(-1)
    ks = torch.tensor([r.top_k if 0 < r.top_k < V else V for r in rows], device=logits.device)
    rank = torch.arange(V, device=logits.device)[None, :]  # (1, V)
    drop_sorted = rank >= ks[:, None]  # beyond each row's k
    ps = torch.tensor([r.top_p for r in rows], device=logits.device)
    probs = torch.softmax(sorted_logits.masked_fill(drop_sorted, float("-inf")), dim=-1)
    # Mass strictly before each token: the most likely token always survives (as infer's top-p).
    before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted |= (before >= ps[:, None]) & (ps[:, None] < 1.0)
    drop_sorted[:, 0] = False  # the likeliest token survives any cut (a top_p that is 0 in fp32)
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_rows(
    logits: torch.Tensor,
    rows: Sequence[RowSampling],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """One token id per row of `logits` (B, V): argmax for greedy rows, else a draw from the
    row's filtered distribution with the row's generator."""
    greedy = torch.argmax(logits, dim=-1).tolist()
    sampled = [i for i, r in enumerate(rows) if not r.greedy]
    if not sampled:
        return greedy
    index = torch.tensor(sampled, device=logits.device)
    sub_rows = [rows[i] for i in sampled]
    probs = torch.softmax(filter_logits(logits.index_select(0, index), sub_rows), dim=-1)
    for j, i in enumerate(sampled):
        greedy[i] = int(torch.multinomial(probs[j], 1, generator=generators[i]))
    return greedy


def make_row_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A row's generator: seeded when the request gave a seed, else from fresh entropy."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen
