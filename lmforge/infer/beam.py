"""Beam search over a batch of prompts, with the model's cache reordered every step.

Each prompt keeps `beam_size` live hypotheses; a step scores every (beam, token) extension by the
summed log-probability, keeps the best `2 * beam_size` candidates, moves those that end in a stop id
to the finished list and continues with the best `beam_size` others (the scheme of Hugging Face's
`BeamSearchScorer`). Finished hypotheses are ranked by score / length ** length_penalty. A prompt is
done when it has `beam_size` finished hypotheses that no live beam can still beat; its rows leave
the batch. With beam_size=1 this is exactly greedy decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.infer.generator import GenerationParams, Generator, left_pad


@dataclass
class BeamResult:
    """The best hypothesis of one prompt: ids without the stop id, and its normalised score."""

    token_ids: list[int]
    score: float
    finished: bool  # ended with a stop id (False: hit max_new_tokens)


@dataclass
class _Prompt:
    finished: list[tuple[float, list[int], bool]]  # (normalised score, ids, ended by a stop id)
    done: bool = False


def _normalise(score: float, length: int, length_penalty: float) -> float:
    return score / max(length, 1) ** length_penalty


@torch.inference_mode()
def beam_search(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    beam_size: int,
    max_new_tokens: int,
    stop_ids: Sequence[int] = (),
    length_penalty: float = 1.0,
) -> list[BeamResult]:
    """The best continuation of each prompt. A GPT prompt is cropped from the left so that prompt
    plus `max_new_tokens` fit the context."""
    if beam_size < 1 or max_new_tokens < 1:
        raise ValueError(f"beam_size={beam_size} and max_new_tokens={max_new_tokens} must be >= 1")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (e.g. the eot id)")
    device = next(model.parameters()).device
    context = model.max_context
    if context is not None:
        max_new_tokens = min(max_new_tokens, context - 1)
        prompts = [list(p)[-(context - max_new_tokens) :] for p in prompts]
    K, n = beam_size, len(prompts)
    tokens, pad_mask = left_pad(prompts, device)
    cache = model.init_cache(n, max_len=tokens.size(1) + max_new_tokens, device=device)
    logits = model(tokens, cache=cache, pad_mask=pad_mask)[:, -1]  # (n, V)
    expand = torch.arange(n, device=device).repeat_interleave(K)  # each prompt -> K rows
    cache.reorder_(expand)
    logits = logits.index_select(0, expand)  # (n*K, V)
    # Only the first beam of each prompt starts alive, so the K beams do not begin identical.
    scores = torch.full((n, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    scores = scores.view(-1)
    hyps: list[list[int]] = [[] for _ in range(n * K)]
    state = [_Prompt([]) for _ in range(n)]
    active = list(range(n))  # prompt of each group of K batch rows
    stops = frozenset(stop_ids)
    for step in range(max_new_tokens):
        logprobs = F.log_softmax(logits.float(), dim=-1)  # (rows, V)
        vocab = logprobs.size(-1)
        cand = (scores[:, None] + logprobs).view(len(active), K * vocab)
        top_scores, top_idx = cand.topk(min(2 * K, K * vocab), dim=1)  # (groups, 2K)
        rows, next_tokens, next_scores, next_hyps, next_active = [], [], [], [], []
        last = step == max_new_tokens - 1
        pairs = zip(top_scores.tolist(), top_idx.tolist(), strict=True)
        for g, (s_row, i_row) in enumerate(pairs):
            prompt = state[active[g]]
            chosen = _select(prompt, g, s_row, i_row, vocab, hyps, K, stops, length_penalty)
            if last:
                _close(prompt, chosen, K, length_penalty)
            if prompt.done or last:
                continue
            for row, tok, score, hyp in chosen:
                rows.append(row)
                next_tokens.append(tok)
                next_scores.append(score)
                next_hyps.append(hyp)
            next_active.append(active[g])
        if not next_active:
            break
        index = torch.tensor(rows, device=device)
        cache.reorder_(index)
        scores = torch.tensor(next_scores, device=device)
        hyps, active = next_hyps, next_active
        step_ids = torch.tensor(next_tokens, device=device)[:, None]  # (rows, 1)
        logits = model(step_ids, cache=cache)[:, -1]
    return [_best(p) for p in state]


def _select(
    prompt: _Prompt,
    group: int,
    s_row: list[float],
    i_row: list[int],
    vocab: int,
    hyps: list[list[int]],
    K: int,
    stops: frozenset[int],
    length_penalty: float,
) -> list[tuple[int, int, float, list[int]]]:
    """The K live extensions (batch row, token, score, ids) of one prompt; stop-ending ones among
    the top K go to `prompt.finished`, and `prompt.done` is set when no live beam can win."""
    chosen: list[tuple[int, int, float, list[int]]] = []
    for rank, (score, flat) in enumerate(zip(s_row, i_row, strict=True)):
        if score == float("-inf"):
            break
        row = group * K + flat // vocab
        tok = flat % vocab
        if tok in stops:
            if rank < K:
                length = len(hyps[row]) + 1
                _add_finished(prompt, hyps[row], score, length, K, length_penalty, True)
            continue
        chosen.append((row, tok, score, [*hyps[row], tok]))
        if len(chosen) == K:
            break
    if not chosen:
        prompt.done = True
    elif len(prompt.finished) >= K:
        best_live = _normalise(chosen[0][2], len(chosen[0][3]), length_penalty)
        prompt.done = prompt.finished[-1][0] >= best_live
    while chosen and len(chosen) < K:  # keep K rows per prompt; the copies can never win
        row, tok, _, hyp = chosen[-1]
        chosen.append((row, tok, float("-inf"), hyp))
    return chosen


def _add_finished(
    prompt: _Prompt,
    ids: list[int],
    score: float,
    length: int,
    K: int,
    length_penalty: float,
    stopped: bool,
) -> None:
    prompt.finished.append((_normalise(score, length, length_penalty), list(ids), stopped))
    prompt.finished.sort(key=lambda item: -item[0])
    del prompt.finished[K:]


def _close(
    prompt: _Prompt, chosen: list[tuple[int, int, float, list[int]]], K: int, length_penalty: float
) -> None:
    """Out of steps: live hypotheses compete with the finished ones as they are."""
    if prompt.done:
        return
    for _, _, score, hyp in chosen:
        if score != float("-inf"):
            _add_finished(prompt, hyp, score, len(hyp), K, length_penalty, False)
    prompt.done = True


def _best(prompt: _Prompt) -> BeamResult:
    if not prompt.finished:
        return BeamResult([], float("-inf"), False)
    score, ids, stopped = prompt.finished[0]
    return BeamResult(ids, score, stopped)


def beam_texts(
    generator: Generator, prompts: list[list[int]], params: GenerationParams, beam_size: int
) -> list[str]:
    """Beam search each prompt; text cut at the first stop string."""
    results = beam_search(
        generator.model, prompts, beam_size, params.max_new_tokens, params.stop_ids
    )
    texts = []
    for result in results:
        text = generator.tokenizer.decode(result.token_ids)
        for stop in params.stop:
            text = text.split(stop, 1)[0] if stop else text
        texts.append(text)
    return texts
