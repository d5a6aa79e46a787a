"""Scoring answers four ways beside exact match, so a jump can be traced to the metric or not.

Schaeffer et al. (2023): exact match over an L-token answer is roughly p^L for per-token
accuracy p, so a smooth rise of p looks like a sudden "emergence" of exact match. Every task here
is scored by exact match **and** per-token accuracy, token edit distance, -log p(correct answer)
and the Brier score, plus `predicted_exact_match`: the mean of p^L over the examples.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance between two token sequences (insert, delete, substitute: 1 each)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def answer_metrics(
    logits: torch.Tensor,
    targets: torch.Tensor,
    answer_mask: torch.Tensor,
    decoded: list[list[int]] | None = None,
) -> dict[str, float]:
    """Teacher-forced metrics of the answer tokens.

    Args:
        logits: (n, T-1, V) next-token logits; targets: (n, T-1) the tokens that follow.
        answer_mask: (n, T-1) bool, the targets that form each example's answer.
        decoded: each example's greedily decoded answer, for the edit distance; without it the
            teacher-forced argmax tokens stand in (the same length as the answer).

    Exact match here is "every answer token is the argmax given the correct prefix", which is
    exactly "greedy decoding reproduces the answer": both fail at the first wrong token.
    """
    logits = logits.float()
    mask = answer_mask
    log_probs = F.log_softmax(logits, dim=-1)
    correct = (logits.argmax(dim=-1) == targets) & mask
    lengths = mask.sum(dim=1).clamp(min=1)
    token_acc = float(correct.sum() / mask.sum().clamp(min=1))
    exact = ((correct | ~mask).all(dim=1)).float()
    nll = -(log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask).sum(dim=1)
    probs = log_probs.exp()
    onehot = F.one_hot(targets, logits.size(-1)).float()
    brier = ((probs - onehot) ** 2).sum(dim=-1)
    per_example_acc = correct.sum(dim=1) / lengths
    answers = [t[m].tolist() for t, m in zip(targets, mask, strict=True)]
    if decoded is None:
        guesses = logits.argmax(dim=-1)
        decoded = [g[m].tolist() for g, m in zip(guesses, mask, strict=True)]
    distances = [edit_distance(d, a) for d, a in zip(decoded, answers, strict=True)]
    return {
        "exact_match": float(exact.mean()),
        "token_accuracy": token_acc,
        "edit_distance": sum(distances) / len(distances),
        "neg_log_p": float(nll.mean()),
        "brier": float(brier[mask].mean()),
        # What exact match would be if tokens were right independently with accuracy p.
        "predicted_exact_match": float((token_acc ** lengths.float()).mean()),
        "mean_example_accuracy": float(per_example_acc.mean()),
        "answer_length": float(lengths.float().mean()),
    }


@torch.no_grad()
def greedy_answers(model: Any, rows: torch.Tensor, answer_start: int) -> list[list[int]]:
    """Greedy decoding of each row's answer from its prompt (rows[:, :answer_start]).

    Recomputes the whole prefix each step (answers are a few tokens; no cache needed).
    """
    seq = rows[:, :answer_start]
    for _ in range(rows.size(1) - answer_start):
        nxt = model(seq)[:, -1].argmax(dim=-1, keepdim=True)  # (n, 1)
        seq = torch.cat([seq, nxt], dim=1)
    return seq[:, answer_start:].tolist()


def per_position_loss(logits: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Mean next-token loss at each position (T-1 values), over the rows."""
    losses = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    return losses.mean(dim=0).tolist()


def in_context_score(
    logits: torch.Tensor, targets: torch.Tensor, answer_mask: torch.Tensor, early_mask: torch.Tensor
) -> dict[str, float]:
    """Induction: the loss on the segment's first occurrence (early in the context; `early_mask`)
    minus the loss on its repeat (late; the answer mask), both after their first token, in nats.
    The tokens are uniform random, so only what the context says lowers either loss. A repeat's
    tokens all appeared earlier, which "boost a token seen before" exploits too; the random
    context before the first occurrence narrows that gain (many of its tokens were seen by then)
    without removing it."""
    losses = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    early_loss = float(losses[early_mask].mean())
    late_loss = float(losses[answer_mask].mean())
    return {"early_loss": early_loss, "late_loss": late_loss, "icl_score": early_loss - late_loss}
