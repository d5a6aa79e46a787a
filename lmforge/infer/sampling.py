"""Pure sampling functions: next-token logits -> token ids.

Repetition penalty (CTRL, Keskar et al. 2019), temperature (0 means greedy), top-k and top-p
(nucleus, Holtzman et al. 2020) filters, then a draw from a caller-owned `torch.Generator`, so a
seeded generation is repeatable and independent of the global RNG. No model, cache or tokenizer
here; `generator.py` owns the decoding loop.
"""

from __future__ import annotations

import torch


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Make tokens already in the text less likely (CTRL): their positive logits are divided by
    `penalty`, negative ones multiplied. logits (B, V), seen (B, V) bool -> (B, V)."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def seen_tokens(
    ids: torch.Tensor, vocab_size: int, pad_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Which tokens occur in each row: ids (B, T) -> (B, V) bool; pads (True in pad_mask) do not
    count."""
    seen = torch.zeros(ids.size(0), vocab_size, dtype=torch.bool, device=ids.device)
    src = torch.ones_like(ids, dtype=torch.bool)
    if pad_mask is not None:
        src = ~pad_mask
    # scatter_reduce with amax keeps a True once set, whatever the order of duplicate ids.
    return seen.scatter_reduce(1, ids, src, reduce="amax")


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row, set the rest to -inf. logits (B, V) -> (B, V)."""
    if k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches p. (B, V) -> (B, V)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    # Mass strictly before each token: a token is dropped once the mass before it reaches p, so
    # the most likely token always survives.
    before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row from next-token logits (B, V) -> (B,) int64."""
    if temperature == 0:
        return torch.argmax(logits, dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = apply_top_k(logits, top_k)
    if top_p is not None:
        logits = apply_top_p(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded with `seed`, or from fresh entropy when `seed` is None."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen
