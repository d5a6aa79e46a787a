"""Scoring a span-QA run (`lmforge finetune RUN task=squad qa.head=span`): windows and decoding.

A span run answers by pointing, not by writing: `SpanQAHead` gives start and end logits per token
of the input, which is the question, then a window of the context (question first, so a causal
model has read it when it reaches the answer). A context longer than the model's window is cut
into windows that overlap by `stride` tokens. Decoding takes the best start <= end pair over the
context tokens of every window, at most `max_answer_len` tokens long; the prediction is the
context's own characters (tokenizer offsets), scored with SQuAD's official EM/F1 beside the
model-free baselines.

Both verbs use this code: `lmforge finetune` (its dev selection and final test score) and
`lmforge eval RUN task=squad`, which scores a run with a `span_qa/` head here and any other run
generatively (`eval/tasks/squad.py`). The windows, `max_len`, `stride` and `max_answer_len` come
from the head's `span_qa.json`, so eval reproduces the fine-tuning's own test score exactly.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmforge.errors import CheckpointError, DataError
from lmforge.eval.report import write_report
from lmforge.eval.squad_metrics import (
    first_sentence_baseline,
    overlap_span_baseline,
    squad_scores,
)
from lmforge.models.heads import SPAN_DIR, SPAN_META_FILE, SpanQAHead, load_span_head, pad_batch

if TYPE_CHECKING:
    from lmforge.eval.config import EvalConfig, TaskSection
    from lmforge.run.rundir import LoadedRun

log = logging.getLogger(__name__)

QUESTION = "Question: {question}\nContext:"
SCORING = "span"  # the report's `scoring` value (generative scoring writes "generative")
DECODE_BATCH = 32  # windows per forward pass unless `decode.batch_size` says otherwise

# Keys that only shape generative scoring: set on a span run, they are ignored with a warning.
GENERATIVE_DECODE_KEYS = ("beam_size", "max_new_tokens", "length_penalty")
GENERATIVE_TASK_KEYS = ("template", "target_delimiter")


@dataclass(frozen=True)
class QAExample:
    """One question: its context, the reference answers and where the first one starts."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_start: int | None  # character offset of answers[0] in context (training)


@dataclass(frozen=True)
class SpanFeature:
    """One window: the question's ids then context ids; the context tokens' character offsets;
    the answer's first and last position in `ids` (0, 0 when it is not in this window)."""

    ids: list[int]
    context_start: int
    offsets: list[tuple[int, int]]
    start: int
    end: int
    example: int


def is_span_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a span-QA head (`span_qa/span_qa.json`, written by finetune)."""
    return (Path(run_dir) / SPAN_DIR / SPAN_META_FILE).is_file()


def read_examples(task: Any, split: str, task_cfg: TaskSection) -> list[QAExample]:
    """SQuAD-format questions of `split` (the task's article split), with answer offsets; the
    same questions, in the same order, as the generative `SquadTask.examples`."""
    out = []
    for article in task.articles(split, task_cfg):
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if not qa["answers"]:
                    continue
                answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))
                first = qa["answers"][0]
                question = qa["question"].strip()
                start = first.get("answer_start")
                out.append(QAExample(qa["id"], question, paragraph["context"], answers, start))
    return out


def make_features(
    examples: list[QAExample], tokenizer: Any, max_len: int, stride: int
) -> list[SpanFeature]:
    """Every window of every example, labelled with its answer's token positions."""
    features = []
    for index, example in enumerate(examples):
        question = tokenizer.encode(QUESTION.format(question=example.question))
        question = question[: max_len // 2]  # a long question never leaves no room for context
        encoding = tokenizer.inner.encode(example.context, add_special_tokens=False)
        ids, offsets = encoding.ids, encoding.offsets
        budget = max_len - len(question)
        step = max(1, budget - min(stride, budget - 1))
        span = _answer_tokens(example, offsets)
        lo = 0
        while True:
            hi = min(lo + budget, len(ids))
            start = end = 0
            if span is not None and lo <= span[0] and span[1] < hi:
                start, end = len(question) + span[0] - lo, len(question) + span[1] - lo
            window = question + ids[lo:hi]
            features.append(
                SpanFeature(window, len(question), list(offsets[lo:hi]), start, end, index)
            )
            if hi >= len(ids):
                break
            lo += step
    return features


def _answer_tokens(example: QAExample, offsets: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The first and last context token overlapping the first answer's characters."""
    if example.answer_start is None:
        return None
    lo, hi = example.answer_start, example.answer_start + len(example.answers[0])
    covering = [i for i, (a, b) in enumerate(offsets) if a < hi and b > lo]
    return (covering[0], covering[-1]) if covering else None


# ---------------------------------------------------------------------------------------------
# Decoding


@torch.no_grad()
def predict_spans(
    model: SpanQAHead,
    examples: list[QAExample],
    features: list[SpanFeature],
    max_answer_len: int,
    batch_size: int = DECODE_BATCH,
) -> list[str]:
    """The best answer (context characters) of each example over all its windows."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    best: list[tuple[float, str]] = [(-math.inf, "") for _ in examples]
    order = sorted(range(len(features)), key=lambda i: len(features[i].ids))
    for i in range(0, len(order), batch_size):
        chunk = [features[j] for j in order[i : i + batch_size]]
        tokens, _ = pad_batch([f.ids for f in chunk])
        starts, ends = model(tokens.to(device))
        for row, feature in enumerate(chunk):
            score, text = _best_span(feature, starts[row], ends[row], max_answer_len, examples)
            if score > best[feature.example][0]:
                best[feature.example] = (score, text)
    model.train(was_training)
    return [text for _, text in best]


def _best_span(
    feature: SpanFeature,
    start: torch.Tensor,
    end: torch.Tensor,
    max_answer_len: int,
    examples: list[QAExample],
) -> tuple[float, str]:
    lo, n = feature.context_start, len(feature.offsets)
    if n == 0:
        return -math.inf, ""
    s, e = start[lo : lo + n].float(), end[lo : lo + n].float()  # (n,) context positions only
    scores = s[:, None] + e[None, :]  # (n, n): start i, end j
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    allowed = (j >= i) & (j - i < max_answer_len)
    scores = scores.masked_fill(~allowed.to(scores.device), -math.inf)
    flat = int(scores.argmax())
    a, b = divmod(flat, n)
    context = examples[feature.example].context
    return float(scores[a, b]), context[feature.offsets[a][0] : feature.offsets[b][1]]


def score_predictions(predictions: list[str], examples: list[QAExample]) -> dict[str, float]:
    """Official SQuAD EM/F1 of `predictions`, and of the two model-free baselines."""
    answers = [list(e.answers) for e in examples]
    scores = squad_scores(predictions, answers)
    out = {"exact_match": scores["exact_match"], "f1": scores["f1"]}
    for name, guess in (
        ("first_sentence", first_sentence_baseline),
        ("overlap", overlap_span_baseline),
    ):
        base = squad_scores([guess(e.context, e.question) for e in examples], answers)
        out[f"baseline_{name}_exact_match"] = base["exact_match"]
        out[f"baseline_{name}_f1"] = base["f1"]
    return out


def evaluate_span(
    model: SpanQAHead,
    examples: list[QAExample],
    tokenizer: Any,
    max_len: int,
    stride: int,
    max_answer_len: int,
    batch_size: int = DECODE_BATCH,
) -> tuple[list[str], dict[str, float]]:
    """Each example's predicted span and the EM/F1 (beside the baselines) of `examples`."""
    features = make_features(examples, tokenizer, max_len, stride)
    predictions = predict_spans(model, examples, features, max_answer_len, batch_size)
    return predictions, score_predictions(predictions, examples)


# ---------------------------------------------------------------------------------------------
# `lmforge eval SPAN_RUN task=squad`


def generative_only_keys(cfg: EvalConfig) -> list[str]:
    """The keys the user set that shape only generative scoring (ignored for a span run)."""
    keys = [f"decode.{k}" for k in GENERATIVE_DECODE_KEYS if k in cfg.decode.model_fields_set]
    keys += [f"task.{k}" for k in GENERATIVE_TASK_KEYS if k in cfg.task.model_fields_set]
    return keys


def evaluate_span_run(task: Any, run: LoadedRun, cfg: EvalConfig) -> dict[str, Any]:
    """Score `run`'s span head on `cfg.task.split` (test unless told dev) with the windows it
    was fine-tuned with; write `eval/<task>[.dev].json|md` (`scoring: span`) and the predictions."""
    head_dir = run.run_dir / SPAN_DIR
    model, meta = load_span_head(run.model, head_dir)
    try:
        max_len, stride = int(meta["max_len"]), int(meta["stride"])
        max_answer_len = int(meta["max_answer_len"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{head_dir / SPAN_META_FILE} lacks max_len/stride/max_answer_len ({exc})"
        ) from None
    ignored = generative_only_keys(cfg)
    if ignored:
        log.warning(
            "%s is a span-QA run (%s/): it is scored by its span head, so %s (generative "
            "scoring only) is ignored",
            run.run_dir,
            SPAN_DIR,
            ", ".join(ignored),
        )
    split = cfg.task.split
    examples = read_examples(task, split, cfg.task)
    if not examples:
        raise DataError(f"task {task.name} {split} has no questions; check the task's files")
    examples = examples[: cfg.limit] if cfg.limit else examples
    predictions, scores = evaluate_span(
        model, examples, run.tokenizer, max_len, stride, max_answer_len, cfg.decode.batch_size
    )
    metrics: dict[str, Any] = {
        "scoring": SCORING,
        "split": split,
        "examples": len(examples),
        "checkpoint": run.checkpoint_dir.name,
        **scores,
        "max_answer_len": max_answer_len,
    }
    name = task.name if split == "test" else f"{task.name}.{split}"
    _write_predictions(run.run_dir / "eval" / f"{name}.predictions.jsonl", examples, predictions)
    write_report(run.run_dir, name, metrics)
    return metrics


def _write_predictions(path: Path, examples: list[QAExample], predictions: list[str]) -> None:
    """One JSON line per question: id, question, references and the predicted span."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for example, span in zip(examples, predictions, strict=True):
            row: dict[str, Any] = {"id": example.id, "question": example.question}
            row |= {"references": list(example.answers), SCORING: span}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
