"""The task registry, classification task data loading, few-shot prompts and evaluation."""

from __future__ import annotations

import json

import pytest

from lmforge.config import build_config
from lmforge.errors import ConfigError, DataError
from lmforge.eval.config import EvalConfig
from lmforge.eval.fewshot import Prompting, build_contexts
from lmforge.eval.tasks import TASKS, get_task
from lmforge.eval.tasks.classification import TASK as GENERIC
from lmforge.finetune.config import FinetuneConfig
from lmforge.run.rundir import load_run


def test_every_registered_task_resolves():
    for name in TASKS:
        task = get_task(name)
        assert task.name == name
        assert task.kind in ("classification", "multiple_choice", "generation")


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown task 'sst3'; known tasks: .*sst2"):
        get_task("sst3")


def test_task_shorthand_and_keys():
    cfg = build_config(EvalConfig, None, ["task=sst2", "task.dev=d.txt", "shots=2"])
    assert (cfg.task.name, cfg.task.dev, cfg.shots) == ("sst2", "d.txt", 2)
    ft = build_config(FinetuneConfig, None, ["init=runs/x", "task=trec", "classifier.mode=head"])
    assert ft.task.name == "trec" and ft.classifier.mode == "head"


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return str(path)


def _generic_cfg(tmp_path, **extra):
    train = _write(tmp_path, "train.txt", [f"{i % 3} text {i}" for i in range(30)])
    test = _write(tmp_path, "test.txt", ["0 a", "1 b", "2 c", "1 d"])
    return build_config(
        EvalConfig,
        None,
        {"task": {"name": "classification", "train": train, "test": test, **extra}},
    )


def test_generic_task_holds_dev_out_of_train_when_none_is_given(tmp_path):
    cfg = _generic_cfg(tmp_path)
    data = GENERIC.load(cfg.task, ("train", "dev", "test"))
    assert data.labels == ["0", "1", "2"]
    assert len(data.dev.texts) == 3 and len(data.train.texts) == 27
    assert not set(data.dev.texts) & set(data.train.texts)
    assert data.test.labels == [0, 1, 2, 1]
    again = GENERIC.load(cfg.task, ("train", "dev", "test"))
    assert again.dev == data.dev  # fixed: no run seed reaches the hold-out


def test_generic_task_needs_files(tmp_path):
    cfg = build_config(EvalConfig, None, ["task=classification"])
    with pytest.raises(DataError, match="set task.test=FILE"):
        GENERIC.load(cfg.task, ("test",))


def test_unknown_test_label_is_a_data_error(tmp_path):
    cfg = _generic_cfg(tmp_path)
    _write(tmp_path, "test.txt", ["0 a", "9 z"])
    with pytest.raises(DataError, match=r"test.txt line 2: unknown label '9'"):
        GENERIC.load(cfg.task, ("train", "test"))


def test_verbalizers_must_match_labels(tmp_path):
    cfg = _generic_cfg(tmp_path, verbalizers=["x", "y"])
    with pytest.raises(ConfigError, match="2 entries for 3 labels"):
        GENERIC.load(cfg.task, ("train", "test"))


def test_fewshot_contexts_are_seeded_and_never_show_the_answer():
    prompting = Prompting("Q: {text}\nA:", ["no", "yes"])
    pool = [(f"t{i}", i % 2) for i in range(10)]
    contexts = build_contexts(["t3", "new"], prompting, 2, pool, seed=7)
    assert contexts == build_contexts(["t3", "new"], prompting, 2, pool, seed=7)
    for ctx, text in zip(contexts, ["t3", "new"], strict=True):
        parts = ctx.split("\n\n")
        assert len(parts) == 3 and parts[-1] == f"Q: {text}\nA:"
        assert all(p.endswith((" no", " yes")) for p in parts[:2])
    assert "Q: t3\nA: yes" not in contexts[0]  # the test example is never its own shot
    assert build_contexts(["x"], prompting, 0) == ["Q: x\nA:"]


def test_fewshot_evaluation_writes_its_report(tmp_path, gpt_run):
    cfg = _generic_cfg(tmp_path, verbalizers=["red", "green", "blue"])
    cfg = cfg.model_copy(update={"shots": 2})
    metrics = GENERIC.evaluate(load_run(gpt_run), cfg)
    assert metrics["method"] == "2-shot" and metrics["n"] == 4
    assert 0.0 <= metrics["acc"] <= 1.0 and 0.0 <= metrics["macro_f1"] <= 1.0
    saved = json.loads((gpt_run / "eval" / "classification.json").read_text())
    assert saved["acc"] == metrics["acc"]
    assert len(saved["details"]["confusion_matrix"]) == 3
    assert (gpt_run / "eval" / "classification_confusion.png").stat().st_size > 0
    assert (gpt_run / "eval" / "classification.md").read_text().count("|") > 10


def test_builtin_tasks_find_the_shared_data(shared_data):
    cfg = build_config(EvalConfig, None, [f"task.dir={shared_data / 'trec'}", "task=trec"])
    data = get_task("trec").load(cfg.task, ("train", "dev", "test"))
    assert len(data.test.texts) == 500
    assert len(data.train.texts) + len(data.dev.texts) == 5452
    assert data.label_names[0] == "description"
    sst2 = get_task("sst2").load(build_config(EvalConfig, None, ["task=sst2"]).task, ("dev",))
    assert len(sst2.dev.texts) == 872
