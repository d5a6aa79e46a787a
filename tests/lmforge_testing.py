"""Helpers shared by test modules (importable as `lmforge_testing`; pytest puts tests/ on the path).

Kept out of conftest.py because several conftest modules exist and `from conftest import ...`
would pick whichever one pytest imported last.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`$LMFORGE_SHARED_DATA`, else `../shared/data` beside the repo."""
    return Path(os.environ.get("LMFORGE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def require(condition: bool, reason: str) -> None:
    """Skip when something optional is missing, except under CI where it is a failure."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must not skip)")
    pytest.skip(reason)


LM_EVAL_TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def write_lm_eval_task(
    root: Path, task: str, items: list[tuple[str, list[str]]], monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A local lm-evaluation-harness multiple-choice task (gold: the first choice) under `root`,
    run offline; returns the folder to pass as `TaskManager(include_path=...)`."""
    import json

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(root / "datasets_cache"))
    with (root / "items.jsonl").open("w") as f:
        for question, choices in items:
            f.write(json.dumps({"question": question, "choices": choices, "gold": 0}) + "\n")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / f"{task}.yaml").write_text(
        LM_EVAL_TASK_YAML.format(task=task, data=root / "items.jsonl")
    )
    return tasks
