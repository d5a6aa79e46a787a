"""The classic LSTM language model: embedding -> multi-layer LSTM -> dropout -> linear head.

Its (h, c) state is its cache (`LSTMState`), so generation treats it like the GPT's KV cache;
truncated backprop through time is the trainer's job (carry the state, call `detach_()`).
References: Zaremba et al. 2014 (dropout), Merity et al. 2017 AWD-LSTM (init, tying with a
projection), Press & Wolf 2017 (weight tying).
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.models.config import LSTMConfig
from lmforge.models.layers import order_after_moves, swap_remove_order


class LSTMState:
    """The LSTM's cache: h and c, each (n_layers, B, d_hidden); replaced in place by forward."""

    def __init__(self, h: torch.Tensor, c: torch.Tensor) -> None:
        self.h = h
        self.c = c

    @property
    def batch_size(self) -> int:
        return self.h.size(1)

    def detach_(self) -> LSTMState:
        """Cut the autograd graph (truncated BPTT): later windows do not backprop into this one."""
        self.h = self.h.detach()
        self.c = self.c.detach()
        return self

    def reorder_(self, index: torch.Tensor) -> None:
        """Reorder or drop batch rows in place (beam search, finished rows): row i <- index[i]."""
        self.h = self.h.index_select(1, index)
        self.c = self.c.index_select(1, index)

    def add_rows_(self, src: LSTMState) -> None:
        """Append the rows of `src` (e.g. a prompt run alone) as the last rows (continuous
        batching: a request joins a running batch). Rows are independent, so nothing aligns."""
        self.h = torch.cat([self.h, src.h.to(self.h.dtype)], dim=1)
        self.c = torch.cat([self.c, src.c.to(self.c.dtype)], dim=1)

    def remove_rows_(self, rows: list[int] | tuple[int, ...]) -> list[int]:
        """Drop `rows`; the remaining rows are ordered as the KV cache orders them (the last rows
        fill the holes). Returns the old index of every remaining row, in its new order."""
        moves = swap_remove_order(self.batch_size, rows)
        order = order_after_moves(self.batch_size, len(set(rows)), moves)
        self.reorder_(torch.tensor(order, dtype=torch.long, device=self.h.device))
        return order

    def trim_(self) -> int:
        """Nothing to trim (a state has no slots); kept so both caches offer the same calls."""
        return 0


class LSTMLanguageModel(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab_size), fp32."""

    def __init__(self, cfg: LSTMConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = cfg
        self.vocab_size = vocab_size
        self.tok_emb = nn.Embedding(vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        # nn.LSTM applies its dropout between layers only, never after the last one.
        self.lstm = nn.LSTM(
            cfg.d_model,
            cfg.d_hidden,
            cfg.n_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.n_layers > 1 else 0.0,
        )
        needs_proj = cfg.tie_embeddings and cfg.d_hidden != cfg.d_model
        self.proj = nn.Linear(cfg.d_hidden, cfg.d_model, bias=False) if needs_proj else None
        head_in = cfg.d_model if cfg.tie_embeddings else cfg.d_hidden
        self.lm_head = nn.Linear(head_in, vocab_size)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Init as in AWD-LSTM: embedding/head uniform(+-init_range), head bias 0, LSTM weights
        PyTorch's uniform(+-1/sqrt(d_hidden)) (keeps gate pre-activations O(1) whatever the width).
        Forget-gate biases start at `forget_bias` (Jozefowicz et al. 2015): a cell that remembers
        by default learns long dependencies sooner."""
        cfg = self.config
        self.lstm.reset_parameters()
        nn.init.uniform_(self.tok_emb.weight, -cfg.init_range, cfg.init_range)
        nn.init.uniform_(self.lm_head.weight, -cfg.init_range, cfg.init_range)
        nn.init.zeros_(self.lm_head.bias)
        if self.proj is not None:
            bound = cfg.d_hidden**-0.5
            nn.init.uniform_(self.proj.weight, -bound, bound)
        H = cfg.d_hidden
        for layer in range(cfg.n_layers):
            # Gate order in PyTorch's packed biases: input, forget, cell, output. The two biases
            # are summed, so the forget value goes into one and zero into the other.
            b_ih = getattr(self.lstm, f"bias_ih_l{layer}")
            b_hh = getattr(self.lstm, f"bias_hh_l{layer}")
            b_ih[H : 2 * H].fill_(cfg.forget_bias)
            b_hh[H : 2 * H].zero_()

    @property
    def max_context(self) -> int | None:
        return None  # a recurrent state has no length limit

    def init_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> LSTMState:
        """Zero state for `batch_size` rows; `max_len` is accepted for a uniform API and unused.

        The state stays in the weights' dtype (default) even under autocast: nn.LSTM keeps its
        recurrent state in fp32 there, and fp32 state is what long decodes want anyway.
        """
        param = self.tok_emb.weight
        shape = (self.config.n_layers, batch_size, self.config.d_hidden)
        kwargs = {"device": device or param.device, "dtype": dtype or param.dtype}
        return LSTMState(torch.zeros(shape, **kwargs), torch.zeros(shape, **kwargs))

    def forward(
        self,
        tokens: torch.Tensor,
        cache: LSTMState | None = None,
        pad_mask: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size) in fp32 for tokens (B, T); see `hidden_states` for the args.
        `logits_to_keep` > 0 computes only the last k positions' logits (0: all), as the GPT."""
        hidden = self.hidden_states(tokens, cache, pad_mask)
        if logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        return self.lm_head(hidden).float()

    def hidden_states(
        self,
        tokens: torch.Tensor,
        cache: LSTMState | None = None,
        pad_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final hidden states (B, T, d) that `lm_head` reads (classifiers too).

        Args:
            tokens: (B, T) token ids; with a cache, the tokens that follow its state.
            cache: state from `init_cache` (or None for a zero state); its h and c are replaced
                by the state after the last token, keeping the autograd graph (see `detach_`).
            pad_mask: (B, T) bool, True marks pad tokens: they leave their row's state unchanged.
                Logits at pad positions are meaningless.
        """
        state = cache if cache is not None else self.init_cache(tokens.size(0))
        x = self.drop(self.tok_emb(tokens))  # (B, T, d_model)
        if torch.is_autocast_enabled(x.device.type):
            # CPU autocast casts the LSTM weights but not its input, and oneDNN then refuses the
            # mixed fp32/bf16 call; casting the input ourselves is what autocast does on CUDA.
            x = x.to(torch.get_autocast_dtype(x.device.type))
        hc = (state.h, state.c)
        if pad_mask is None:
            out, hc = self.lstm(x, hc)  # (B, T, d_hidden)
        else:
            out, hc = self._run_masked(x, hc, pad_mask)
        state.h, state.c = hc
        out = self.drop(out)
        if self.proj is not None:
            out = self.proj(out)  # (B, T, d_hidden) -> (B, T, d_model)
        return out

    def _run_masked(
        self, x: torch.Tensor, hc: tuple[torch.Tensor, torch.Tensor], pad_mask: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run the LSTM where pads keep their row's state. Columns up to the last one holding a pad
        go one step at a time (a masked update); the rest, pad-free, in one fused call. With
        left-padded prompts the stepped part is only as long as the longest padding."""
        pad_cols = pad_mask.any(dim=0).nonzero()
        if pad_cols.numel() == 0:
            return self.lstm(x, hc)
        n_stepped = int(pad_cols.max()) + 1
        h, c = hc
        outputs = []
        for t in range(n_stepped):
            out_t, (h_new, c_new) = self.lstm(x[:, t : t + 1], (h, c))  # (B, 1, d_hidden)
            keep = pad_mask[:, t].view(1, -1, 1)  # (B,) -> (1, B, 1), broadcast over layers/units
            h, c = torch.where(keep, h, h_new), torch.where(keep, c, c_new)
            outputs.append(out_t)
        if n_stepped < x.size(1):
            out_rest, (h, c) = self.lstm(x[:, n_stepped:], (h, c))
            outputs.append(out_rest)
        return torch.cat(outputs, dim=1), (h, c)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count (tied weights once); without embeddings: minus tok_emb (so a tied
        head is excluded, an untied lm_head is counted)."""
        n = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            n -= self.tok_emb.weight.numel()
        return n

    def flops_per_token(self, seq_len: int, lm_head: bool = True) -> int:
        """Training FLOPs per token, 6N-style: each weight used in a matmul costs 2 FLOPs forward
        and 4 backward per token. N = LSTM weights (input and recurrent, once per step) +
        projection + head (tied or not; `lm_head=False` leaves it and its bias out, for a model
        that puts another head on the body); the embedding lookup is free. `seq_len` is unused:
        the cost per token does not depend on context length."""
        n = self.num_params(include_embeddings=False)
        if self.config.tie_embeddings:
            n += self.lm_head.weight.numel()
        if not lm_head:
            n -= sum(p.numel() for p in self.lm_head.parameters())
        return 6 * n
