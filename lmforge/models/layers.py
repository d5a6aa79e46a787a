"""Shared building blocks for the models: normalisation, rotary embeddings, attention masks.

Only stateless or tiny pieces live here; whole architectures are in `gpt.py` and `lstm.py`.
RMSNorm and RoPE follow Hugging Face's `modeling_llama.py` exactly (fp32 normalisation,
rotate-half RoPE layout), so that our weights and HF's produce the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), as Llama uses it: no mean, no bias."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:
            # One fused op; in fp32 it computes what HF does (normalise, then scale).
            return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)
        # Normalise in fp32 even under autocast (bf16 sums of squares lose too much), then scale
        # in the input dtype, which is the order HF's LlamaRMSNorm uses.
        normed = F.rms_norm(x.float(), (x.size(-1),), eps=self.eps).to(x.dtype)
        return self.weight * normed

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"


def build_norm(kind: str, dim: int, eps: float, bias: bool) -> nn.Module:
    """`rmsnorm` (Llama) or `layernorm` (GPT-2; its bias follows the model's `bias` switch)."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    raise AssertionError(f"unknown norm {kind!r}")  # the config's Literal rules this out


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin tables, each (max_seq_len, head_dim), in HF's rotate-half layout.

    Frequencies follow RoFormer (Su et al. 2021): inv_freq_i = theta^(-2i/head_dim). Each table
    repeats its half, `cat(freqs, freqs)`, because rotate-half pairs dimension i with i + D/2
    (HF's layout) rather than interleaved neighbours (the paper's and Meta's original layout).
    The sin table's first half is negated, which lets `apply_rope` rotate with one `roll`.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    t = torch.arange(max_seq_len, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, D/2) -> (T, D)
    sign = torch.ones(head_dim)
    sign[: head_dim // 2] = -1.0
    return emb.cos(), emb.sin() * sign


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys x (B, H, T, D) by position; cos/sin from `rope_tables` broadcast.

    cos/sin are (T, D) for shared positions or (B, 1, T, D) for per-row positions. They are cast to
    x's dtype first so that autocast's bf16 q/k stay bf16 (an fp32 table would promote them).
    HF's `x * cos + rotate_half(x) * sin`, with rotate_half(x) = cat(-x2, x1): rolling x by D/2
    gives cat(x2, x1) and the signed sin table supplies the minus, the same numbers in fewer ops.
    """
    if cos.dtype != x.dtype:
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + x.roll(x.size(-1) // 2, dims=-1) * sin


def padded_attention_mask(valid: torch.Tensor, start: int, n_new: int) -> torch.Tensor:
    """Boolean mask (B, 1, n_new, start + n_new): True where a new query may attend a key slot.

    Args:
        valid: (B, >= start + n_new) bool, True for slots holding real tokens (False for pads).
        start: slot index of the first new query (the number of slots already cached).
        n_new: number of new queries.

    A query sees slots at or before its own that hold real tokens. A pad query also sees itself,
    so that no row of the mask is empty: an all-False row makes SDPA return NaN, which would then
    leak through the (ignored) pad outputs into gradients and comparisons.
    """
    end = start + n_new
    device = valid.device
    key_slot = torch.arange(end, device=device)
    query_slot = torch.arange(start, end, device=device)
    causal = key_slot[None, :] <= query_slot[:, None]  # (n_new, end)
    itself = key_slot[None, :] == query_slot[:, None]  # (n_new, end)
    mask = causal[None] & (valid[:, None, :end] | itself[None])  # (B, n_new, end)
    return mask[:, None]  # (B, n_new, end) -> (B, 1, n_new, end), broadcast over heads


def positions_from_pads(real: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row positions (B, T) that advance only on real tokens (`real` is (B, T) bool).

    A row's first real token gets position `offset[b]` (0 without a cache). Pad tokens get the
    position of the previous real token (clamped at 0); they are never attended, so it is unused.
    """
    positions = real.long().cumsum(dim=1) - 1  # (B, T)
    if offset is not None:
        positions = positions + offset[:, None]
    return positions.clamp_(min=0)


def swap_remove_order(batch_size: int, rows: list[int] | tuple[int, ...]) -> list[tuple[int, int]]:
    """Moves (destination, source) that drop `rows` from a batch by filling each hole below the
    new size with one of the last rows, so only the moved rows are copied (the rest stay put)."""
    gone = set(rows)
    size = batch_size - len(gone)
    holes = [i for i in sorted(gone) if i < size]
    movers = [i for i in range(size, batch_size) if i not in gone]
    return list(zip(holes, movers, strict=True))


def order_after_moves(batch_size: int, n_removed: int, moves: list[tuple[int, int]]) -> list[int]:
    """The old index of every row left after `swap_remove_order`'s moves, in the new order."""
    order = list(range(batch_size - n_removed))
    for dst, src in moves:
        order[dst] = src
    return order
