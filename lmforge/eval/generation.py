"""Generation tasks (translation, QA, copy/reverse, any prompt/response JSONL): the shared parts.

A task supplies `examples(split)` (prompt, response, references) and `score(predictions)`; this
module decodes the test prompts greedily and with beam search, scores both, writes
`eval/<task>.json|md` and `eval/<task>.predictions.jsonl`. Fine-tuning on the same examples is
`lmforge.finetune.sft`. Prompts are sorted by length before batching so little padding is decoded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmforge.errors import DataError
from lmforge.eval.config import DecodeSection, EvalConfig, TaskSection
from lmforge.eval.report import write_report
from lmforge.infer.beam import beam_search
from lmforge.infer.generator import GenerationParams, Generator
from lmforge.progress import track

if TYPE_CHECKING:
    from lmforge.run.rundir import LoadedRun

log = logging.getLogger(__name__)

Metrics = dict[str, float | int | str]


@dataclass(frozen=True)
class Example:
    """One prompt/response pair. `prompt` and `response` are the exact texts the model reads and
    writes (template applied); `references` are what a prediction is scored against."""

    prompt: str
    response: str
    references: tuple[str, ...]
    id: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)  # task-specific (e.g. context)


class GenerationTask:
    """Base of the generation tasks: subclasses define the data, the template and the metric."""

    kind: Literal["generation"] = "generation"
    name: str = "generation"
    stop: tuple[str, ...] = ("\n",)  # an answer ends at the first newline (or end-of-text)
    max_new_tokens: int = 64  # default answer budget, in tokens

    def examples(self, split: str, cfg: TaskSection) -> list[Example]:
        raise NotImplementedError

    def score(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        raise NotImplementedError

    def for_run(self, run: LoadedRun) -> GenerationTask:
        """The task as it applies to `run` (a chat task takes the run's chat template)."""
        return self

    def baselines(self, examples: list[Example]) -> dict[str, float]:
        """Model-free reference scores reported beside the model's (none by default)."""
        return {}

    def evaluate(self, run: LoadedRun, cfg: EvalConfig) -> Metrics:
        return evaluate_generation(self, run, cfg.task, cfg.decode, cfg.limit)


def limit_examples(examples: list[Example], limit: int | None, what: str) -> list[Example]:
    if not examples:
        raise DataError(f"{what} has no examples; check the task's files")
    return examples[:limit] if limit else examples


def evaluate_generation(
    task: GenerationTask,
    run: LoadedRun,
    task_cfg: TaskSection,
    decode: DecodeSection,
    limit: int | None = None,
) -> Metrics:
    """Greedy and (beam_size > 1) beam-search answers to `task_cfg.split` (test unless told dev),
    scored and reported; the report names the split."""
    split = task_cfg.split
    examples = limit_examples(task.examples(split, task_cfg), limit, f"task {task.name} {split}")
    prompts = [e.prompt for e in examples]
    max_new = decode.max_new_tokens or task.max_new_tokens
    metrics: Metrics = {
        "scoring": "generative",
        "split": split,
        "examples": len(examples),
        "checkpoint": run.checkpoint_dir.name,
    }
    outputs: dict[str, list[str]] = {}
    modes = ["greedy"] + (["beam"] if decode.beam_size > 1 else [])
    for mode in modes:
        beam = decode.beam_size if mode == "beam" else 1
        outputs[mode] = decode_answers(run, prompts, max_new, beam, decode, task.stop)
        for key, value in task.score(outputs[mode], examples).items():
            metrics[f"{key}_{mode}"] = value
    if decode.beam_size > 1:
        metrics["beam_size"] = decode.beam_size
    metrics.update(task.baselines(examples))
    # A dev score is kept apart from the test report (eval/<task>.dev.json beside <task>.json).
    name = task.name if split == "test" else f"{task.name}.{split}"
    write_predictions(run.run_dir / "eval" / f"{name}.predictions.jsonl", examples, outputs)
    write_report(run.run_dir, name, metrics)
    return metrics


def decode_answers(
    run: LoadedRun,
    prompts: Sequence[str],
    max_new_tokens: int,
    beam_size: int,
    decode: DecodeSection,
    stop: tuple[str, ...],
) -> list[str]:
    """The model's answer to each prompt (stripped, cut at the first stop string), in order."""
    tokenizer, model = run.tokenizer, run.model.eval()
    ids = [tokenizer.encode(p) or [tokenizer.eot_id] for p in prompts]
    context = model.max_context
    if context is not None and beam_size > 1:
        # Beam search decodes at fixed positions: crop prompts from the left so prompt + answer
        # fit. Greedy decoding keeps a prompt that fits whole, as SFT trained on it (cropping it
        # to make room for a long answer budget would show the model text it never saw); the
        # generator crops only a prompt longer than the context and slides a full window.
        max_new_tokens = min(max_new_tokens, context // 2)
        ids = [p[-(context - max_new_tokens) :] for p in ids]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = [order[i : i + decode.batch_size] for i in range(0, len(order), decode.batch_size)]
    answers: list[str] = [""] * len(ids)
    generator = Generator(model, tokenizer)
    params = GenerationParams(
        max_new_tokens=max_new_tokens, temperature=0, stop_ids=(tokenizer.eot_id,), stop=stop
    )
    what = "greedy" if beam_size == 1 else f"beam {beam_size}"
    for batch in track(batches, f"decoding ({what})"):
        chunk = [ids[i] for i in batch]
        if beam_size == 1:
            texts = [c.text for c in generator.generate(chunk, params)]
        else:
            results = beam_search(
                model, chunk, beam_size, max_new_tokens, (tokenizer.eot_id,), decode.length_penalty
            )
            texts = [_cut(tokenizer.decode(r.token_ids), stop) for r in results]
        for i, text in zip(batch, texts, strict=True):
            answers[i] = text.strip()
    return answers


def _cut(text: str, stop: tuple[str, ...]) -> str:
    for s in stop:
        text = text.split(s, 1)[0]
    return text


def write_predictions(
    path: Path, examples: Sequence[Example], outputs: dict[str, list[str]]
) -> None:
    """One JSON line per example: id, prompt, references and each decoding mode's answer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for i, example in enumerate(examples):
            row: dict[str, Any] = {"id": example.id or str(i), "prompt": example.prompt}
            row["references"] = list(example.references)
            row.update({mode: answers[i] for mode, answers in outputs.items()})
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def exact_match_rate(predictions: Sequence[str], examples: Sequence[Example]) -> float:
    """Percent of predictions equal (after stripping) to one of their references."""
    hits = sum(
        p.strip() in {r.strip() for r in e.references}
        for p, e in zip(predictions, examples, strict=True)
    )
    return 100.0 * hits / max(len(examples), 1)
