"""`copy_reverse`: a synthetic task that proves SFT and decoding work end to end.

Prompts `copy abc=` or `reverse abc=` over a small alphabet; the answer is the string or its
reverse. Generated from a seed (different per split), so no files are needed; the metric is exact
match. A model that learns it has learned to read the prompt and to stop (end-of-text).
"""

from __future__ import annotations

import random

from lmforge.eval.config import TaskSection
from lmforge.eval.generation import Example, GenerationTask, exact_match_rate

OPERATIONS = ("copy", "reverse")


class CopyReverseTask(GenerationTask):
    name = "copy_reverse"
    stop = ()  # answers end at end-of-text

    def __init__(
        self,
        alphabet: str = "abcdef",
        min_len: int = 1,
        max_len: int = 5,
        sizes: dict[str, int] | None = None,
        seed: int = 0,
    ) -> None:
        self.alphabet, self.min_len, self.max_len, self.seed = alphabet, min_len, max_len, seed
        self.sizes = sizes or {"train": 20000, "dev": 200, "test": 200}
        self.max_new_tokens = max_len + 4

    def texts(self) -> list[str]:
        """Every character the task uses (to build a tokenizer that covers it)."""
        return [" ".join(OPERATIONS) + "=" + self.alphabet]

    def examples(self, split: str, cfg: TaskSection | None = None) -> list[Example]:
        rng = random.Random(f"{self.seed}-{split}")
        out = []
        for i in range(self.sizes[split]):
            op = rng.choice(OPERATIONS)
            n = rng.randint(self.min_len, self.max_len)
            text = "".join(rng.choice(self.alphabet) for _ in range(n))
            answer = text if op == "copy" else text[::-1]
            out.append(Example(f"{op} {text}=", answer, (answer,), f"{split}-{i}"))
        return out

    def score(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        return {"exact_match": exact_match_rate(predictions, examples)}


TASK = CopyReverseTask()
