"""The task registry: task name -> the object that defines and evaluates that task.

A task is data plus a definition (reader, prompt template, verbalisers, metric), one small file per
task family in this package; nothing here trains (`lmforge.finetune` does, by the task's `kind`).
`TASKS` maps names to "module:ATTR" so a task is imported only when used; `get_task(name)` returns
it. Every task follows the `Task` protocol below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Literal, Protocol

from lmforge.errors import ConfigError

if TYPE_CHECKING:
    from lmforge.eval.config import EvalConfig
    from lmforge.run.rundir import LoadedRun

TaskKind = Literal["classification", "multiple_choice", "generation"]
Metrics = dict[str, float | int | str]

# task name -> "module:ATTR"; the attribute is an object following `Task`.
TASKS: dict[str, str] = {
    "classification": "lmforge.eval.tasks.classification:TASK",
    "sst2": "lmforge.eval.tasks.sst2:TASK",
    "trec": "lmforge.eval.tasks.trec:TASK",
    "multiple_choice": "lmforge.eval.tasks.multiple_choice:TASK",
    "copy_reverse": "lmforge.eval.tasks.copy_reverse:TASK",
    "multi30k_en_de": "lmforge.eval.tasks.multi30k:EN_DE",
    "multi30k_de_en": "lmforge.eval.tasks.multi30k:DE_EN",
    "squad": "lmforge.eval.tasks.squad:TASK",
    "sft_jsonl": "lmforge.eval.tasks.sft_jsonl:TASK",
    "chat": "lmforge.eval.tasks.chat:TASK",
}


class Task(Protocol):
    """What `lmforge eval` needs from a task; `kind` tells `lmforge finetune` how to train for it
    (classification tasks also offer `load(...)`, generation tasks `examples(split, ...)`)."""

    name: str
    kind: TaskKind

    def evaluate(self, run: LoadedRun, cfg: EvalConfig) -> Metrics:
        """Score `run` on the task; write `run_dir/eval/<name>.json|md`; return flat metrics."""
        ...


def get_task(name: str) -> Task:
    """The task registered as `name`, or a ConfigError listing the known tasks."""
    target = TASKS.get(name)
    if target is None:
        known = ", ".join(sorted(TASKS))
        raise ConfigError(f"unknown task '{name}'; known tasks: {known} (set task=NAME)")
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
