"""Looking inside a GPT: per-head prefix-matching scores, attention maps and a logit lens.

- `prefix_matching_scores`: Olsson et al. (2022)'s induction-head test. On a random segment
  repeated once, a head's score is its mean attention, from each token of the repeat, to the
  token right after that token's first occurrence. Induction heads score near 1.
- `attention_maps`: softmax(QK^T) per layer and head for a prompt, through
  `lmforge.models.gpt.record_attention` (the explicit path; SDPA stays the default).
- `logit_lens`: the top next-token guesses read off the residual stream after each block
  (final norm + head applied early, nostalgebraist 2020).
"""

from __future__ import annotations

from typing import Any

import torch

from lmforge.models.gpt import GPT, record_attention


@torch.no_grad()
def prefix_matching_scores(
    model: GPT,
    rows: torch.Tensor,
    lengths: torch.Tensor,
    copies: torch.Tensor,
    repeats: torch.Tensor,
) -> list[list[float]]:
    """Score per [layer][head] on `rows` (n, T) holding a segment of `lengths[i]` tokens at
    `copies[i]` (its first occurrence) and its repeat at `repeats[i]` (the induction task's
    layout: `tasks.segment_lengths` and `repeat_starts` read them off the answer mask, which
    covers the repeat; `tasks.copy_starts` reads the first occurrence off the early mask).

    For the query at repeats[i] + k (the repeat's k-th token, k = 0 .. L-2), the prefix-matching
    target is the key right after that token's occurrence in the copy, copies[i] + k + 1.
    Averaged over all such queries of all rows.
    """
    model.eval()
    with record_attention(model) as maps:
        model(rows)
    totals = [torch.zeros(m.size(1)) for m in maps]
    count = 0
    layout = zip(lengths.tolist(), copies.tolist(), repeats.tolist(), strict=True)
    for i, (length, copy, start) in enumerate(layout):
        queries = torch.arange(start, start + length - 1)
        keys = torch.arange(copy + 1, copy + length)
        for layer, probs in enumerate(maps):
            totals[layer] += probs[i][:, queries, keys].sum(dim=-1)  # (H,)
        count += len(queries)
    return [(t / max(count, 1)).tolist() for t in totals]


@torch.no_grad()
def attention_maps(model: GPT, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Attention probabilities for one prompt (T,): a (n_heads, T, T) tensor per layer."""
    model.eval()
    with record_attention(model) as maps:
        model(tokens.unsqueeze(0))
    return [m[0] for m in maps]


@torch.no_grad()
def logit_lens(model: GPT, tokens: torch.Tensor, top_k: int = 3) -> list[dict[str, Any]]:
    """Per layer (embeddings first, then after each block): the top-k next-token ids and
    probabilities at every position, read through the final norm and the output head."""
    model.eval()
    states: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: states.append(out))
             for block in model.blocks]  # fmt: skip
    embed_hook = model.tok_emb.register_forward_hook(lambda _m, _i, out: states.append(out))
    try:
        model(tokens.unsqueeze(0))
    finally:
        for hook in [*hooks, embed_hook]:
            hook.remove()
    if model.pos_emb is not None:  # the residual stream starts as token + position embedding
        states[0] = states[0] + model.pos_emb.weight[: tokens.numel()]
    layers = []
    for depth, state in enumerate(states):
        probs = model.lm_head(model.norm(state)).float().softmax(dim=-1)[0]  # (T, V)
        top = probs.topk(top_k, dim=-1)
        layers.append(
            {
                "layer": "embeddings" if depth == 0 else f"block {depth - 1}",
                "ids": top.indices.tolist(),
                "probs": top.values.tolist(),
            }
        )
    return layers
