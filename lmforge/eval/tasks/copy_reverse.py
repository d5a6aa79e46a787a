"""`copy_reverse`: a synthetic task that proves SFT and decoding work end to end.

Prompts `copy abc=` or `reverse abc=` over a small alphabet; the answer is the string or its
reverse. Generated from a seed, so no files are needed; the metric is exact match. A model that
learns it has learned to read the prompt and to stop (end-of-text). Splits are disjoint by
construction: a seeded hash assigns every (operation, string) pair to exactly one split's part of
the space, and each split draws only from its own part, so no test prompt occurs in training.
"""

from __future__ import annotations

import hashlib
import random

from lmforge.eval.config import TaskSection
from lmforge.eval.generation import Example, GenerationTask, exact_match_rate

OPERATIONS = ("copy", "reverse")
# Share of the (operation, string) space each split owns; train gets the rest.
HELD_OUT = {"dev": 0.1, "test": 0.1}


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

    def split_of(self, op: str, text: str) -> str:
        """The one split that owns `op text` (a seeded hash: stable, independent of sizes)."""
        digest = hashlib.sha256(f"{self.seed}|{op}|{text}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        for split, share in HELD_OUT.items():
            if u < share:
                return split
            u -= share
        return "train"

    def examples(self, split: str, cfg: TaskSection | None = None) -> list[Example]:
        if split not in self.sizes:
            raise ValueError(f"copy_reverse has splits {sorted(self.sizes)}, not '{split}'")
        rng = random.Random(f"{self.seed}-{split}")
        out: list[Example] = []
        for _ in range(1000 * self.sizes[split] + 10_000):
            if len(out) == self.sizes[split]:
                break
            op = rng.choice(OPERATIONS)
            n = rng.randint(self.min_len, self.max_len)
            text = "".join(rng.choice(self.alphabet) for _ in range(n))
            if self.split_of(op, text) != split:
                continue  # owned by another split: never drawn here
            answer = text if op == "copy" else text[::-1]
            out.append(Example(f"{op} {text}=", answer, (answer,), f"{split}-{len(out)}"))
        if len(out) < self.sizes[split]:
            raise ValueError(f"copy_reverse: too few strings for a {split} split; raise max_len")
        return out

    def score(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        return {"exact_match": exact_match_rate(predictions, examples)}


TASK = CopyReverseTask()
