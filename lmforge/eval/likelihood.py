"""Log-likelihood scoring of continuations, as lm-evaluation-harness does it.

`score_choices(model, tokenizer, context, choices)` returns each choice's summed log-probability
given the context; `loglikelihood` scores many (context ids, continuation ids) requests in
length-sorted, right-padded batches. Encoding follows lm-eval's causal path: trailing spaces of
the context move to the continuation, the pair is encoded whole and split at the context's length,
an empty context is replaced by the end-of-text token, and long inputs are cropped from the left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn


class TextEncoder(Protocol):
    """The part of a tokenizer scoring needs."""

    eot_id: int | None

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class ChoiceScore:
    """One continuation's score: summed log-probability (nats) and its lengths."""

    loglik: float
    num_tokens: int
    num_chars: int
    num_bytes: int
    is_greedy: bool


Request = tuple[list[int], list[int]]  # (context ids, continuation ids)


def encode_pair(tokenizer: TextEncoder, context: str, continuation: str) -> Request:
    """Token ids of (context, continuation) split as lm-eval's causal models split them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        # Word-boundary spaces belong to the scored text, so "Answer:" + " yes" tokenises as usual.
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if not context:
        eot = tokenizer.eot_id
        if eot is None:
            raise ValueError("an empty context needs a tokenizer with an end-of-text token")
        return [eot], tokenizer.encode(continuation)
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids) :]


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def model_window(model: Any, default: int = 2048) -> int:
    """Longest input the model takes (GPT: its context; LSTM: unbounded, so `default`)."""
    return getattr(model, "max_context", None) or default


@torch.no_grad()
def loglikelihood(
    model: nn.Module, requests: Sequence[Request], batch_size: int = 16, max_len: int | None = None
) -> list[tuple[float, bool]]:
    """(summed log-prob of the continuation, whether greedy decoding would produce it) per request.

    Each input is context + continuation minus its last token, cropped from the left to
    `max_len` (default: the model's context). Requests run longest first so batches pad little.
    """
    window = max_len or model_window(model)
    was_training = model.training
    model.eval()
    device = model_device(model)
    results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    order = sorted(range(len(requests)), key=lambda i: -sum(map(len, requests[i])))
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for i, res in zip(
                chunk,
                _score_batch(model, [requests[i] for i in chunk], window, device),
                strict=True,
            ):
                results[i] = res
    finally:
        model.train(was_training)
    return results


def _score_batch(
    model: nn.Module, batch: Sequence[Request], window: int, device: torch.device
) -> list[tuple[float, bool]]:
    inputs, spans = [], []
    for context, continuation in batch:
        if not continuation:
            raise ValueError("cannot score an empty continuation")
        if len(continuation) > window:
            raise ValueError(f"continuation of {len(continuation)} tokens exceeds window {window}")
        full = (list(context) + list(continuation))[-(window + 1) :]
        inputs.append(full[:-1])
        spans.append((len(full) - 1 - len(continuation), full[-len(continuation) :]))
    width = max(len(x) for x in inputs)
    # Right padding: a causal model's logits at real positions never see the pads after them.
    tokens = torch.zeros(len(inputs), width, dtype=torch.long)
    for row, ids in enumerate(inputs):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    logits = model(tokens.to(device))  # (B, T, V)
    out = []
    for row, (begin, target) in enumerate(spans):
        piece = logits[row, begin : begin + len(target)].float()  # (n, V)
        logprobs = F.log_softmax(piece, dim=-1)
        target_t = torch.tensor(target, device=logprobs.device)
        total = logprobs.gather(1, target_t[:, None]).sum().item()
        greedy = bool((logprobs.argmax(dim=-1) == target_t).all())
        out.append((float(total), greedy))
    return out


def score_choices(
    model: nn.Module,
    tokenizer: TextEncoder,
    context: str,
    choices: Sequence[str],
    batch_size: int = 16,
) -> list[ChoiceScore]:
    """Score each choice as a continuation of `context` (one batched forward per `batch_size`)."""
    requests = [encode_pair(tokenizer, context, choice) for choice in choices]
    scored = loglikelihood(model, requests, batch_size=batch_size)
    return [
        ChoiceScore(ll, len(req[1]), len(choice), len(choice.encode("utf-8")), greedy)
        for (ll, greedy), req, choice in zip(scored, requests, choices, strict=True)
    ]


def pick(logliks: Sequence[float], lengths: Sequence[int] | None = None) -> int:
    """Index of the best choice: argmax of loglik, or of loglik / length when lengths are given.

    With `lengths` = characters of each choice this is lm-eval's `acc_norm` rule.
    """
    if lengths is None:
        scores = list(logliks)
    else:
        scores = [ll / max(n, 1) for ll, n in zip(logliks, lengths, strict=True)]
    return max(range(len(scores)), key=scores.__getitem__)
