"""Multiple choice: file errors, lm-eval scoring rules, agreement with per-choice scoring."""

from __future__ import annotations

import json

import pytest

from lmforge.config import build_config
from lmforge.errors import ConfigError, DataError
from lmforge.eval.config import EvalConfig
from lmforge.eval.likelihood import score_choices
from lmforge.eval.tasks import get_task
from lmforge.eval.tasks.multiple_choice import read_questions, score_questions, with_shots
from lmforge.finetune import finetune
from lmforge.finetune.config import FinetuneConfig
from lmforge.run.rundir import load_run
from lmforge.verb import Flags

QUESTIONS = [
    {"context": "The sky is", "choices": ["blue", "a green apple"], "answer": 0},
    {"context": "Two plus two is", "choices": ["four", "five", "22"], "answer": 0},
    {"context": "Fire is", "choices": ["cold", "hot"], "answer": 1},
]


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "line,message",
    [
        ("{not json", "line 2: invalid JSON"),
        ('{"context": "a", "choices": ["x", "y"]}', "line 2: expected an object with"),
        ('{"context": "a", "choices": ["x"], "answer": 0}', "line 2: 'choices' must be a list"),
        ('{"context": "a", "choices": ["x", "y"], "answer": 2}', r"line 2: 'answer' must be"),
    ],
)
def test_bad_lines_name_their_number(tmp_path, line, message):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(QUESTIONS[0]) + "\n" + line + "\n")
    with pytest.raises(DataError, match=message):
        read_questions(path)


def test_empty_file(tmp_path):
    (tmp_path / "q.jsonl").write_text("\n")
    with pytest.raises(DataError, match="has no questions"):
        read_questions(tmp_path / "q.jsonl")


def test_predictions_follow_per_choice_scores(tmp_path, gpt_run):
    run = load_run(gpt_run)
    questions = read_questions(_jsonl(tmp_path / "q.jsonl", QUESTIONS))
    preds, preds_norm = score_questions(run.model, run.tokenizer, questions, batch_size=2)
    for q, p, pn in zip(questions, preds, preds_norm, strict=True):
        scores = score_choices(run.model, run.tokenizer, q.context, [" " + c for c in q.choices])
        lls = [s.loglik for s in scores]
        assert p == max(range(len(lls)), key=lls.__getitem__)
        # acc_norm divides by the characters of the choice itself, without the delimiter.
        normed = [ll / len(c) for ll, c in zip(lls, q.choices, strict=True)]
        assert pn == max(range(len(normed)), key=normed.__getitem__)


def test_evaluate_and_shots(tmp_path, gpt_run):
    test = _jsonl(tmp_path / "test.jsonl", QUESTIONS)
    _jsonl(tmp_path / "train.jsonl", QUESTIONS * 2)
    cfg = build_config(EvalConfig, None, ["task=multiple_choice", f"task.dir={tmp_path}"])
    metrics = get_task("multiple_choice").evaluate(load_run(gpt_run), cfg)
    assert metrics["n"] == 3 and metrics["random_acc"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert (gpt_run / "eval" / "multiple_choice.json").is_file()
    shot = with_shots(read_questions(test), read_questions(test), 2, seed=0, delimiter=" ")
    assert shot[0].context.count("\n\n") == 2 and shot[0].context.endswith("The sky is")


def test_multiple_choice_cannot_be_finetuned(gpt_run):
    cfg = build_config(FinetuneConfig, None, [f"init={gpt_run}", "task=multiple_choice", "out=x"])
    with pytest.raises(ConfigError, match="zero/few-shot only"):
        finetune(cfg, Flags())
