"""The task registry: task name -> the object that evaluates (and fine-tunes for) that task.

A task is data plus a definition (reader, prompt template, verbalisers, metric), one small file per
task family in this package. `TASKS` maps names to "module:ATTR" so a task is imported only when
used; `get_task(name)` returns it. Every task follows the `Task` protocol below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Literal, Protocol

from lmforge.errors import ConfigError

if TYPE_CHECKING:
    from lmforge.eval.config import EvalConfig, FinetuneConfig
    from lmforge.train.rundir import LoadedRun
    from lmforge.verb import Flags

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
}


class Task(Protocol):
    """What `lmforge eval` and `lmforge finetune` need from a task."""

    name: str
    kind: TaskKind

    def evaluate(self, run: LoadedRun, cfg: EvalConfig) -> Metrics:
        """Score `run` on the task; write `run_dir/eval/<name>.json|md`; return flat metrics."""
        ...

    def finetune(self, run: LoadedRun, cfg: FinetuneConfig, flags: Flags) -> int:
        """Fine-tune `run` into `cfg.out`; return an exit code (ConfigError if not finetunable)."""
        ...


def get_task(name: str) -> Task:
    """The task registered as `name`, or a ConfigError listing the known tasks."""
    target = TASKS.get(name)
    if target is None:
        known = ", ".join(sorted(TASKS))
        raise ConfigError(f"unknown task '{name}'; known tasks: {known} (set task=NAME)")
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
