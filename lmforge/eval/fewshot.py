"""Zero- and few-shot classification by likelihood: score each label's verbaliser after a prompt.

The prompt is k solved examples (drawn from the training pool with a seeded RNG, different for
each test example, as lm-evaluation-harness does) followed by the test example, each rendered
with the task's template; the prediction is the label whose verbaliser the model finds likeliest.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from lmforge.eval.likelihood import TextEncoder, encode_pair, loglikelihood, pick

SHOT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Prompting:
    """How examples become text: `template` with `{text}`, then delimiter + verbaliser."""

    template: str
    verbalizers: Sequence[str]
    delimiter: str = " "

    def render(self, text: str) -> str:
        return self.template.replace("{text}", text)

    def solved(self, text: str, label: int) -> str:
        return self.render(text) + self.delimiter + self.verbalizers[label]


def build_contexts(
    texts: Sequence[str],
    prompting: Prompting,
    shots: int,
    pool: Sequence[tuple[str, int]] = (),
    seed: int = 1234,
) -> list[str]:
    """One prompt per text: `shots` solved pool examples (never the text itself), then the text."""
    if shots and len(pool) <= shots:
        raise ValueError(f"{shots} shots need a training pool of more than {shots} examples")
    rng = random.Random(seed)
    contexts = []
    for text in texts:
        demos: list[str] = []
        if shots:
            # Draw one spare so an identical pool example can be dropped and k still remain.
            drawn = [pool[i] for i in rng.sample(range(len(pool)), shots + 1)]
            demos = [prompting.solved(t, y) for t, y in drawn if t != text][:shots]
        contexts.append(SHOT_SEPARATOR.join([*demos, prompting.render(text)]))
    return contexts


def classify(
    model: nn.Module,
    tokenizer: TextEncoder,
    contexts: Sequence[str],
    prompting: Prompting,
    batch_size: int = 16,
) -> tuple[list[int], list[int]]:
    """(argmax loglik, argmax loglik per character) predictions, one forward per batch of pairs."""
    choices = [prompting.delimiter + v for v in prompting.verbalizers]
    requests = [encode_pair(tokenizer, ctx, choice) for ctx in contexts for choice in choices]
    scores = [ll for ll, _ in loglikelihood(model, requests, batch_size=batch_size)]
    n = len(choices)
    lengths = [len(v) for v in prompting.verbalizers]
    preds, preds_norm = [], []
    for i in range(len(contexts)):
        row = scores[i * n : (i + 1) * n]
        preds.append(pick(row))
        preds_norm.append(pick(row, lengths))
    return preds, preds_norm
