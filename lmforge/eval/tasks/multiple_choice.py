"""Generic multiple choice: JSONL lines `{"context": str, "choices": [str, ...], "answer": int}`.

Scored as lm-evaluation-harness scores `output_type: multiple_choice`: each choice is the
continuation `target_delimiter + choice` of the context; `acc` picks the highest summed
log-likelihood, `acc_norm` the highest log-likelihood per character of the choice. Few-shot
prompts prepend k solved training examples joined by blank lines (lm-eval's fewshot_delimiter).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from torch import nn

from lmforge.errors import ConfigError, DataError
from lmforge.eval.config import EvalConfig, TaskSection
from lmforge.eval.fewshot import SHOT_SEPARATOR
from lmforge.eval.likelihood import TextEncoder, encode_pair, loglikelihood, pick
from lmforge.eval.report import write_report
from lmforge.eval.tasks.files import task_file

if TYPE_CHECKING:
    from lmforge.run.rundir import LoadedRun


@dataclass(frozen=True)
class Question:
    context: str
    choices: list[str]
    answer: int


def read_questions(path: str | Path) -> list[Question]:
    """All questions of a JSONL file; DataError naming the line of any malformed one."""
    path = Path(path)
    questions = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                questions.append(_parse(line, path, number))
    if not questions:
        raise DataError(f"{path} has no questions; expected JSONL with context, choices, answer")
    return questions


def _parse(line: str, path: Path, number: int) -> Question:
    where = f"{path} line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not {"context", "choices", "answer"} <= record.keys():
        raise DataError(f"{where}: expected an object with 'context', 'choices' and 'answer'")
    choices, answer = record["choices"], record["answer"]
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c for c in choices)
    ):
        raise DataError(f"{where}: 'choices' must be a list of at least 2 non-empty strings")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise DataError(
            f"{where}: 'answer' must be the index of the right choice (0..{len(choices) - 1}), "
            f"got {answer!r}"
        )
    return Question(str(record["context"]), choices, answer)


def score_questions(
    model: nn.Module,
    tokenizer: TextEncoder,
    questions: list[Question],
    delimiter: str = " ",
    batch_size: int = 16,
) -> tuple[list[int], list[int]]:
    """Predicted choice per question: (argmax loglik, argmax loglik / choice characters)."""
    requests, spans = [], []
    for q in questions:
        spans.append((len(requests), len(q.choices)))
        requests += [encode_pair(tokenizer, q.context, delimiter + c) for c in q.choices]
    scores = [ll for ll, _ in loglikelihood(model, requests, batch_size=batch_size)]
    preds, preds_norm = [], []
    for q, (start, n) in zip(questions, spans, strict=True):
        row = scores[start : start + n]
        preds.append(pick(row))
        preds_norm.append(pick(row, [len(c) for c in q.choices]))
    return preds, preds_norm


def with_shots(
    questions: list[Question], pool: list[Question], shots: int, seed: int, delimiter: str
) -> list[Question]:
    """Questions whose contexts start with `shots` solved pool questions (seeded draw)."""
    if not shots:
        return questions
    if len(pool) < shots:
        raise ConfigError(f"shots={shots} but the training pool has only {len(pool)} questions")
    rng = random.Random(seed)
    out = []
    for q in questions:
        demos = [p.context + delimiter + p.choices[p.answer] for p in rng.sample(pool, shots)]
        out.append(Question(SHOT_SEPARATOR.join([*demos, q.context]), q.choices, q.answer))
    return out


class MultipleChoiceTask:
    """The `multiple_choice` task: files from `task.test` (and `task.train` for shots)."""

    name = "multiple_choice"
    kind: Literal["multiple_choice"] = "multiple_choice"

    def _file(self, cfg: TaskSection, split: str) -> Path:
        explicit = getattr(cfg, split)
        return task_file(self.name, split, explicit, cfg.dir, None, f"{split}.jsonl")

    def evaluate(self, run: LoadedRun, cfg: EvalConfig) -> dict[str, float | int | str]:
        questions = read_questions(self._file(cfg.task, "test"))[: cfg.limit]
        pool = read_questions(self._file(cfg.task, "train")) if cfg.shots else []
        delim = cfg.task.target_delimiter
        prompts = with_shots(questions, pool, cfg.shots, cfg.seed, delim)
        preds, preds_norm = score_questions(
            run.model, run.tokenizer, prompts, delim, cfg.batch_size
        )
        gold = [q.answer for q in questions]
        n = len(questions)
        metrics: dict[str, float | int | str] = {
            "task": self.name,
            "method": f"{cfg.shots}-shot",
            "checkpoint": run.checkpoint_dir.name,
            "n": n,
            "acc": sum(p == g for p, g in zip(preds, gold, strict=True)) / n,
            "acc_norm": sum(p == g for p, g in zip(preds_norm, gold, strict=True)) / n,
            "random_acc": sum(1 / len(q.choices) for q in questions) / n,
        }
        details = {"predictions": preds, "predictions_norm": preds_norm}
        write_report(run.run_dir, self.name, metrics, details)
        return metrics


TASK = MultipleChoiceTask()
