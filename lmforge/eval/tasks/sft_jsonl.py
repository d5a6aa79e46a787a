"""`sft_jsonl`: any prompt/response data as a generation task (fine-tune with SFT, then score).

`task.train=FILE` (required for finetune), `task.dev=FILE` (default: 5% of train, seeded) and
`task.test=FILE` (required for eval), each JSONL with a `prompt` and a `response` string per line
(`references`, a list, may add more accepted answers). `task.template` wraps the prompt (`{prompt}`
is replaced); texts are used exactly as written, so put any separator into them. Scored by exact
match (whitespace-stripped) and chrF.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.errors import ConfigError, DataError
from lmforge.eval.bleu import corpus_chrf
from lmforge.eval.config import TaskSection
from lmforge.eval.generation import Example, GenerationTask, exact_match_rate
from lmforge.eval.tasks.files import held_out

DEV_FRACTION = 0.05
DEV_SEED = 0


def read_pairs(path: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """(prompt, response, references) per line; a malformed line is a DataError with its number."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; check task.train/dev/test")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number} is not valid JSON ({exc.msg})") from None
            prompt, response = record.get("prompt"), record.get("response")
            if not isinstance(prompt, str) or not isinstance(response, str):
                raise DataError(
                    f'{path}:{number} needs "prompt" and "response" strings, '
                    'e.g. {"prompt": "2+2=", "response": "4"}'
                )
            extra = record.get("references") or []
            refs = tuple(dict.fromkeys([response, *[str(r) for r in extra]]))
            rows.append((prompt, response, refs))
    if not rows:
        raise DataError(f"{path} is empty; write one JSON object per line")
    return rows


class SFTJsonlTask(GenerationTask):
    name = "sft_jsonl"
    stop = ()  # responses may span lines; they end at end-of-text
    max_new_tokens = 128

    def examples(self, split: str, cfg: TaskSection) -> list[Example]:
        explicit = getattr(cfg, split)
        if explicit:
            rows = read_pairs(Path(explicit))
        elif split == "dev" and cfg.train:
            rows = held_out(read_pairs(Path(cfg.train)), DEV_FRACTION, dev=True, seed=DEV_SEED)
        else:
            raise ConfigError(
                f"task sft_jsonl needs task.{split}=FILE.jsonl (prompt/response lines)"
            )
        if split == "train" and not cfg.dev:
            rows = held_out(rows, DEV_FRACTION, dev=False, seed=DEV_SEED)
        template = cfg.template or "{prompt}"
        return [
            Example(template.replace("{prompt}", p), r, refs, f"{split}-{i}")
            for i, (p, r, refs) in enumerate(rows)
        ]

    def score(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        return {
            "exact_match": exact_match_rate(predictions, examples),
            "chrf": corpus_chrf(predictions, [e.references[0] for e in examples]),
        }


TASK = SFTJsonlTask()
