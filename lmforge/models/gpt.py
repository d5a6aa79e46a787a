"""A decoder-only Transformer (GPT) with a preallocated KV cache and left-padding support.

- pre-norm residual blocks; RMSNorm or LayerNorm; SwiGLU or GELU(tanh) MLP; optional biases
- RoPE (rotate-half, as HF Llama) or learned absolute positions (as GPT-2)
- grouped-query attention (`n_kv_heads`) through `F.scaled_dot_product_attention`
- with rope+rmsnorm+swiglu it computes exactly HF `LlamaForCausalLM`; with
  learned+layernorm+gelu+bias exactly HF `GPT2LMHeadModel`, so interop is a key map.
References: nanoGPT `model.py`, HF `modeling_llama.py`, GPT-2 and PaLM papers (init, FLOPs).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.models.config import GPTConfig
from lmforge.models.layers import (
    apply_rope,
    build_norm,
    order_after_moves,
    padded_attention_mask,
    positions_from_pads,
    rope_tables,
    swap_remove_order,
)

# ---------------------------------------------------------------------------------------------
# KV cache


class KVCache:
    """Keys and values of every layer, preallocated to `max_len` slots, plus per-row positions.

    Attributes:
        k, v: (n_layers, B, n_kv_heads, max_len, head_dim) tensors.
        valid: (B, max_len) bool, True where a slot holds a real token (False: pad or empty).
        pos: (B,) long, the position the next real token of each row will get.
        length: slots used so far (the same for every row; pads occupy slots too).
        has_pads: whether any slot holds a pad. While not, every row's position equals `length`,
            so the model takes its mask-free path with shared positions.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        max_len: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.pos = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.length = 0
        self.has_pads = False
        self._set_buffers()

    def _set_buffers(self) -> None:
        """Make the current tensors the storage; `k`, `v`, `valid`, `pos` are views of its first
        rows, so rows can join (`add_rows_`) without copying the rows already there."""
        self._k_buf, self._v_buf = self.k, self.v
        self._valid_buf, self._pos_buf = self.valid, self.pos
        self._split_layers()

    def _view_rows(self, rows: int) -> None:
        self.k, self.v = self._k_buf[:, :rows], self._v_buf[:, :rows]
        self.valid, self.pos = self._valid_buf[:rows], self._pos_buf[:rows]
        self._split_layers()

    def _reserve_rows(self, rows: int) -> None:
        """Room for `rows` rows in the storage, doubling it when it grows (amortised copies)."""
        capacity = self._k_buf.size(1)
        if rows <= capacity:
            return
        capacity, n = max(rows, 2 * capacity), self.batch_size

        def grown(buf: torch.Tensor, dim: int) -> torch.Tensor:
            shape = list(buf.shape)
            shape[dim] = capacity
            new = buf.new_zeros(shape)
            new.narrow(dim, 0, n).copy_(buf.narrow(dim, 0, n))
            return new

        self._k_buf, self._v_buf = grown(self._k_buf, 1), grown(self._v_buf, 1)
        self._valid_buf, self._pos_buf = grown(self._valid_buf, 0), grown(self._pos_buf, 0)

    def _split_layers(self) -> None:
        # Per-layer views: a decode step then indexes a list instead of dispatching a select.
        # (Plain indexing, not unbind: unbind's views refuse in-place writes under autograd.)
        self.k_layers = [self.k[i] for i in range(self.k.size(0))]
        self.v_layers = [self.v[i] for i in range(self.v.size(0))]

    @property
    def batch_size(self) -> int:
        return self.k.size(1)

    @property
    def max_len(self) -> int:
        return self.k.size(3)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Store new keys/values (B, Hkv, T, D) after the used slots; return all slots so far."""
        start, end = self.length, self.length + k.size(2)
        k_all, v_all = self.k_layers[layer][:, :, :end], self.v_layers[layer][:, :, :end]
        k_all[:, :, start:] = k
        v_all[:, :, start:] = v
        if k_all.dtype != k.dtype:
            # A cache made in another dtype than autocast's still works, at the price of a cast.
            k_all, v_all = k_all.to(k.dtype), v_all.to(v.dtype)
        return k_all, v_all

    def reorder_(self, index: torch.Tensor) -> None:
        """Reorder or drop batch rows in place (beam search, finished rows): row i <- index[i]."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)
        self.valid = self.valid.index_select(0, index)
        self.pos = self.pos.index_select(0, index)
        if self.batch_size == 0:
            self.length, self.has_pads = 0, False
        self._set_buffers()

    # -- rows joining and leaving a running batch (continuous batching) --------------------------

    def add_rows_(self, src: KVCache) -> None:
        """Append the rows of `src` (e.g. a prompt prefilled alone) as this cache's last rows.

        Rows already here and the new ones all end at the same slot: the new rows' slots are
        placed so that they end at `length` (the slots before them are marked empty), and when
        `src` holds more slots than this cache has used, every row here is shifted right first.
        Positions travel with the rows, so each row keeps computing exactly what it would alone.
        An empty (0-row) cache simply takes `src`'s layout.
        """
        same = (0, 2, 4)  # layers, kv heads, head dim; rows and slots may differ
        if any(src.k.size(d) != self.k.size(d) for d in same):
            raise ValueError(f"cache shapes differ: {tuple(src.k.shape)} vs {tuple(self.k.shape)}")
        if self.batch_size == 0:
            self.length, self.has_pads = 0, False
        if src.length > self.max_len:
            raise ValueError(f"{src.length} slots do not fit a cache of {self.max_len}")
        if src.length > self.length:
            self._shift_(src.length - self.length)
        end, n = self.length, src.length
        start = end - n
        old_rows = self.batch_size
        rows = slice(old_rows, old_rows + src.batch_size)
        self._reserve_rows(rows.stop)
        self._view_rows(rows.stop)
        # (L, B', Hkv, n, D) right-aligned at `end`; the slots before it are marked empty.
        self.k[:, rows, :, start:end] = src.k[:, :, :, :n]
        self.v[:, rows, :, start:end] = src.v[:, :, :, :n]
        self.valid[rows] = False
        self.valid[rows, start:end] = src.valid[:, :n]
        self.pos[rows] = src.pos.to(self.pos.device)
        self.has_pads = self.has_pads or src.has_pads or start > 0

    def remove_rows_(self, rows: list[int] | tuple[int, ...]) -> list[int]:
        """Drop `rows` by moving the last rows into their places (a copy of the moved rows only,
        where `reorder_` copies the whole cache). Returns the old index of every remaining row,
        in its new order, so callers can reorder what they keep per row."""
        moves = swap_remove_order(self.batch_size, rows)
        order = order_after_moves(self.batch_size, len(set(rows)), moves)
        for dst, src in moves:
            self.k[:, dst] = self.k[:, src]
            self.v[:, dst] = self.v[:, src]
            self.valid[dst] = self.valid[src]
            self.pos[dst] = self.pos[src]
        self._view_rows(len(order))
        if not order:
            self.length, self.has_pads = 0, False
        return order

    def trim_(self) -> int:
        """Drop the leading slots that no row uses (freed by rows that left, or padding), so a
        long-running batch does not run out of slots; returns how many were dropped. Once every
        row's slots are all real, the cache is back on the mask-free fast path."""
        used = self.valid[:, : self.length]
        if self.batch_size == 0 or self.length == 0:
            self.length, self.has_pads = 0, False
            return 0
        first = int(used.any(dim=0).long().argmax()) if bool(used.any()) else self.length
        if first > 0:
            self._shift_(-first)
        self.has_pads = not bool(self.valid[:, : self.length].all())
        return first

    def _shift_(self, offset: int) -> None:
        """Move every row's used slots by `offset` (> 0: right, leaving empty slots in front;
        < 0: left, dropping the first -offset slots); `length` follows."""
        old, new = self.length, self.length + offset
        if new > self.max_len:
            raise ValueError(f"shifting {old} slots by {offset} overflows {self.max_len} slots")
        keep = min(old, new)  # slots that survive the move
        src = slice(old - keep, old)
        dst = slice(new - keep, new)
        for t in (self.k, self.v):
            t[:, :, :, dst] = t[:, :, :, src].clone()  # overlapping ranges: copy first
        self.valid[:, dst] = self.valid[:, src].clone()
        if offset > 0:
            self.valid[:, :offset] = False
            self.has_pads = self.has_pads or self.batch_size > 0
        self.valid[:, new:] = False
        self.length = new


# ---------------------------------------------------------------------------------------------
# Attention, MLP, block


# Set by `math_attention` (the trainer's `train.attention_kernel=math`): plain causal attention runs
# as two matmuls and a softmax instead of SDPA's fused kernel. On CPUs the fused (flash) kernel is
# slow for short windows under bf16: Zen 4, B 24, 2 heads of 64, T 128, forward + backward
# 16 ms vs 6 ms. A module flag, not a model attribute, so modules and state dicts stay as they are;
# torch.compile guards on it like any global it reads.
_MATH_ATTENTION = False


@contextmanager
def math_attention(enabled: bool = True) -> Iterator[None]:
    """Within the block, plain causal attention (training's case) is computed by `attend_math`."""
    global _MATH_ATTENTION
    previous, _MATH_ATTENTION = _MATH_ATTENTION, enabled
    try:
        yield
    finally:
        _MATH_ATTENTION = previous


def attend_math(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float
) -> torch.Tensor:
    """Causal attention over T == S positions as two matmuls and a softmax, all in q's dtype
    (the softmax accumulating in fp32). Equals `attend` up to rounding."""
    T = q.size(2)
    if q.size(1) != k.size(1):  # grouped-query: each key/value head serves H/Hkv query heads
        repeat = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    # In q's dtype: torch's CPU softmax accumulates bf16 in fp32 (bit-identical to an fp32
    # softmax cast down), and autograd then keeps only this 2-byte output, not an fp32 copy too
    # (0.6 GB over 6 layers at batch 64 x 6 heads x 256^2).
    probs = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)  # (B, H, T, T)
    if dropout_p > 0:
        probs = F.dropout(probs, dropout_p)
    return probs @ v


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """Scaled dot-product attention: q (B, H, T, D), k/v (B, Hkv, S, D) -> (B, H, T, D).

    `mask is None`: causal, the T queries being the last T of the S keys (T == S in training;
    T == 1 when decoding: every key, no mask). Else `mask` is a bool (B, 1, T, S), True = may
    attend. Scale is 1/sqrt(D), as Llama and GPT-2 use.
    """
    T, S = q.size(2), k.size(2)
    gqa = q.size(1) != k.size(1)
    # Python branches, not a computed is_causal, so that torch.compile sees plain bools.
    if mask is None and T == S:
        if _MATH_ATTENTION:
            return attend_math(q, k, v, dropout_p)
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=True, enable_gqa=gqa
        )
    if mask is None and T > 1:  # a chunk after cached tokens: SDPA's is_causal aligns top-left
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, enable_gqa=gqa
    )


def attend_explicit(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`attend` computed step by step: (output (B, H, T, D), probabilities (B, H, T, S)).

    softmax(QK^T / sqrt(D)) with the same masking rules, for looking at attention maps (the lab);
    slower and more memory-hungry than SDPA, so only `record_attention` turns it on.
    """
    T, S = q.size(2), k.size(2)
    if q.size(1) != k.size(1):  # grouped-query: each key/value head serves H/Hkv query heads
        repeat = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, S)
    if mask is None:  # causal, the T queries being the last T of the S keys
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    probs = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return probs @ v, probs


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        # Set by `record_attention`: a list that receives this layer's attention probabilities.
        self.record: list[torch.Tensor] | None = None
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.dropout = cfg.dropout
        # Separate q/k/v projections keep HF's names (and GQA's unequal widths) without reshuffling.
        self.q_proj = nn.Linear(cfg.d_model, self.n_heads * self.head_dim, bias=cfg.bias)
        self.k_proj = nn.Linear(cfg.d_model, self.n_kv_heads * self.head_dim, bias=cfg.bias)
        self.v_proj = nn.Linear(cfg.d_model, self.n_kv_heads * self.head_dim, bias=cfg.bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.d_model, bias=cfg.bias)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        cache: KVCache | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)
        k = self.k_proj(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, T, Hkv, D) -> (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, T, Hkv, D) -> (B, Hkv, T, D)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.append(self.layer_idx, k, v)  # (B, Hkv, S, D), S = cached + T
        if self.record is None:
            y = attend(q, k, v, mask, self.dropout if self.training else 0.0)
        else:
            y, probs = attend_explicit(q, k, v, mask)
            self.record.append(probs.detach())
        y = y.transpose(1, 2).reshape(B, T, H * D)  # (B, H, T, D) -> (B, T, H*D)
        return self.o_proj(y)


class SwiGLU(nn.Module):
    """Llama's MLP: down(silu(gate(x)) * up(x)) (Shazeer 2020)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ff_dim, bias=cfg.bias)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ff_dim, bias=cfg.bias)
        self.down_proj = nn.Linear(cfg.ff_dim, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GeluMLP(nn.Module):
    """GPT-2's MLP: down(gelu(up(x))) with the tanh GELU that GPT-2 was trained with."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(cfg.d_model, cfg.ff_dim, bias=cfg.bias)
        self.down_proj = nn.Linear(cfg.ff_dim, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.attn_norm = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.attn = CausalSelfAttention(cfg, layer_idx)
        self.mlp_norm: nn.Module | None = None
        self.mlp: nn.Module | None = None
        if cfg.mlp != "none":  # attention-only blocks have no MLP (and no parameters for one)
            self.mlp_norm = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
            self.mlp = SwiGLU(cfg) if cfg.mlp == "swiglu" else GeluMLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        keep: int = 0,
    ) -> torch.Tensor:
        """`keep` > 0: only the last `keep` positions' outputs (B, keep, C); attention still
        reads (and caches) every position's keys and values, the MLP runs on the kept ones."""
        x = x + self._drop(self.attn(self.attn_norm(x), rope, mask, cache))
        if keep > 0:
            x = x[:, -keep:]
        if self.mlp is None:
            return x
        return x + self._drop(self.mlp(self.mlp_norm(x)))

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        # Dropout is the identity in eval; not calling the module saves per-token decode time.
        return self.drop(x) if self.training else x


# ---------------------------------------------------------------------------------------------
# Config


# ---------------------------------------------------------------------------------------------
# Model


class GPT(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab_size), fp32."""

    def __init__(self, cfg: GPTConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = cfg
        self.vocab_size = vocab_size
        self.tok_emb = nn.Embedding(vocab_size, cfg.d_model)
        learned = cfg.pos_emb == "learned"
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model) if learned else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if cfg.pos_emb == "rope":
            # Precomputed once; non-persistent so they are neither saved nor expected on load.
            cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, init_std) weights, zero biases, unit norms; residual projections
        (o_proj, down_proj) get std/sqrt(2*n_layers), because each block adds two of them to the
        residual stream and this keeps its variance at init independent of depth. With
        `zero_init_output` they start at zero instead, so every block starts as the identity."""
        cfg = self.config
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=cfg.init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        for block in self.blocks:
            projections = [block.attn.o_proj]
            if block.mlp is not None:
                projections.append(block.mlp.down_proj)
            for proj in projections:
                if cfg.zero_init_output:
                    nn.init.zeros_(proj.weight)
                else:
                    nn.init.normal_(proj.weight, mean=0.0, std=residual_std)

    @property
    def max_context(self) -> int:
        return self.config.max_seq_len

    def forward(
        self,
        tokens: torch.Tensor,
        cache: KVCache | None = None,
        pad_mask: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size) in fp32 for tokens (B, T); see `hidden_states` for the args.

        `logits_to_keep` (Hugging Face's name): 0 computes every position's logits, k > 0 only
        the last k (B, k, vocab_size) - a prefill that only samples needs 1, and skips the
        (T, d_model) x (d_model, vocab) head matmul for the rest, and the last block's MLP and
        the final norm there too (nothing kept depends on them): a loss on the last tokens only
        (a one-token answer) trains on the same gradients for less.
        """
        hidden = self.hidden_states(tokens, cache, pad_mask, keep=max(0, logits_to_keep))
        return self.lm_head(hidden).float()

    def hidden_states(
        self,
        tokens: torch.Tensor,
        cache: KVCache | None = None,
        pad_mask: torch.Tensor | None = None,
        keep: int = 0,
    ) -> torch.Tensor:
        """The final normed hidden states (B, T, d_model) that `lm_head` reads (classifiers too);
        with `keep` > 0 only the last `keep` positions' (B, keep, d_model).

        Args:
            tokens: (B, T) token ids; with a cache, the tokens that follow what it holds.
            cache: from `init_cache`; read and updated in place (slots, positions).
            pad_mask: (B, T) bool, True marks pad tokens: they do not advance their row's
                position and are never attended. Logits at pad positions are meaningless.
        """
        T = tokens.size(1)
        start = 0 if cache is None else cache.length
        if cache is not None and pad_mask is not None and not cache.has_pads:
            # One host read per padded call until a pad shows up: unpadded caches stay fast.
            cache.has_pads = bool(pad_mask.any())
        padded = pad_mask is not None if cache is None else cache.has_pads
        if not padded:
            # Only real tokens: every row is at positions start..start+T-1 and attention is
            # plainly causal, so no per-row positions and no mask (training and most decoding).
            self._check_room(tokens, cache)
            self._check_positions(start + T - 1, cache)
            if cache is not None:
                cache.valid[:, start : start + T] = True
                cache.pos += T
            positions, mask = None, None
        else:
            positions, mask = self._positions_and_mask(tokens, cache, pad_mask)
        x = self.tok_emb(tokens)  # (B, T, C)
        rope = None
        if self.pos_emb is not None:
            shared = self.pos_emb.weight[start : start + T]  # (T, C), broadcast over B
            x = x + (shared if positions is None else self.pos_emb(positions))
        elif positions is None:
            rope = (self.rope_cos[start : start + T], self.rope_sin[start : start + T])  # (T, D)
        else:
            # (B, T, D) -> (B, 1, T, D), broadcast over heads
            rope = (self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1))
        if self.training:  # dropout is the identity in eval; skip the call (decode time)
            x = self.drop(x)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, cache, keep if i == last else 0)
        if keep > 0 and last < 0:  # no blocks
            x = x[:, -keep:]
        if cache is not None:
            cache.length += T
        return self.norm(x)

    def _check_room(self, tokens: torch.Tensor, cache: KVCache | None) -> None:
        """Raise unless `tokens` (B, T) fit the cache's rows and free slots."""
        if cache is None:
            return
        (B, T), used = tokens.shape, cache.length
        if B != cache.batch_size or used + T > cache.max_len:
            raise ValueError(
                f"cache holds {cache.batch_size} rows x {cache.max_len} slots with "
                f"{used} used; cannot add {B} rows x {T} tokens (init_cache a larger one)"
            )

    def _check_positions(self, last: int, cache: KVCache | None) -> None:
        """Raise if a row's last position `last` is beyond the model's position range."""
        limit = self.config.max_seq_len
        if last >= limit and cache is None:
            raise ValueError(
                f"sequence of {last + 1} tokens exceeds model.max_seq_len={limit}; "
                "use shorter sequences or a model with a larger max_seq_len"
            )
        if last >= limit:
            raise ValueError(
                f"a row reached position {last} but model.max_seq_len={limit}; "
                "generate fewer tokens or use shorter prompts"
            )

    def _positions_and_mask(
        self, tokens: torch.Tensor, cache: KVCache | None, pad_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row positions (B, T) and the attention mask (B, 1, T, S); updates the cache's
        slot validity and positions (its `length` advances after the blocks have appended)."""
        T = tokens.size(1)
        self._check_room(tokens, cache)
        real = torch.ones_like(tokens, dtype=torch.bool) if pad_mask is None else ~pad_mask
        if cache is None:
            positions = positions_from_pads(real)
            mask = padded_attention_mask(real, 0, T)
        else:
            start = cache.length
            cache.valid[:, start : start + T] = real
            positions = positions_from_pads(real, cache.pos)
            cache.pos += real.sum(dim=1)
            mask = padded_attention_mask(cache.valid, start, T)
        # A position never exceeds its slot index, so only a long cache needs the (syncing) check.
        if (0 if cache is None else cache.length) + T > self.config.max_seq_len:
            self._check_positions(int(positions.max()), cache)
        return positions, mask

    def init_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty KV cache for `batch_size` rows and `max_len` slots (default max_seq_len).

        Slots count pads too, so `max_len` may exceed max_seq_len; positions may not. `dtype`
        defaults to the autocast dtype when autocast is on for the device, else the weights'.
        """
        param = self.tok_emb.weight
        device = torch.device(device) if device is not None else param.device
        if dtype is None:
            autocast_on = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast_on else param.dtype
        cfg = self.config
        return KVCache(
            cfg.n_layers,
            batch_size,
            cfg.kv_heads,
            cfg.head_dim,
            max_len or cfg.max_seq_len,
            device,
            dtype,
        )

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count (tied weights once). Without embeddings: minus tok_emb and pos_emb
        (so a tied head is excluded, an untied lm_head is counted)."""
        n = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            n -= self.tok_emb.weight.numel()
            if self.pos_emb is not None:
                n -= self.pos_emb.weight.numel()
        return n

    def flops_per_token(self, seq_len: int, lm_head: bool = True) -> int:
        """Training FLOPs per token (forward + backward), PaLM appendix B / nanoGPT accounting:
        6*N for every weight used in a matmul (N = non-embedding params, plus the head when it is
        tied, since the head matmul happens either way) plus 12 * n_layers * d_model * seq_len for
        the attention scores and weighted sum (counted over the full square, as PaLM does).
        `lm_head=False` leaves the head out, for a model that puts another head on the body
        (a classifier or a span-QA head never runs the LM head)."""
        cfg = self.config
        n = self.num_params(include_embeddings=False)
        if cfg.tie_embeddings:
            n += self.lm_head.weight.numel()
        if not lm_head:
            n -= sum(p.numel() for p in self.lm_head.parameters())
        attention = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len
        return 6 * n + attention


@contextmanager
def record_attention(model: GPT) -> Iterator[list[torch.Tensor]]:
    """Within the block, every attention layer of `model` computes softmax(QK^T) explicitly
    (`attend_explicit`) and appends its probabilities (B, n_heads, T, S) to the yielded list, in
    layer order, once per forward. The fast SDPA path is back when the block exits.

        with record_attention(model) as maps:
            model(tokens)
        maps[layer][b, head, query, key]
    """
    maps: list[torch.Tensor] = []
    layers = [block.attn for block in model.blocks]
    for attn in layers:
        attn.record = maps
    try:
        yield maps
    finally:
        for attn in layers:
            attn.record = None
