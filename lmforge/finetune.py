"""`lmforge finetune RUN task=NAME out=NEW_RUN [key=value ...]`: adapt a trained run to a task.

The task decides how (`Task.finetune` in `lmforge.eval.tasks`): a classification task adds a
classification head and trains it (`lmforge.train.classifier`); a generation task runs supervised
fine-tuning on prompt/response pairs (`lmforge.train.sft`). Either way the result is a new run
dir that `eval`, `generate` and `export` accept.
"""

from __future__ import annotations

import logging

from lmforge.errors import ConfigError
from lmforge.eval.config import FinetuneConfig
from lmforge.runtime import resolve_device, set_threads
from lmforge.verb import Flags, Verb

log = logging.getLogger(__name__)


def finetune(cfg: FinetuneConfig, flags: Flags | None = None) -> int:
    """Library entry point: load `cfg.init`, hand it to the task's `finetune`, return its code."""
    from lmforge.eval.tasks import TASKS, get_task
    from lmforge.train.rundir import load_run

    flags = flags or Flags()
    if not cfg.init:
        raise ConfigError("finetune needs the run to start from: lmforge finetune runs/x task=...")
    if not cfg.task.name:
        known = ", ".join(sorted(TASKS))
        raise ConfigError(f"finetune needs task=NAME (one of: {known})")
    task = get_task(cfg.task.name)
    set_threads(cfg.threads)
    run = load_run(cfg.init, cfg.checkpoint, resolve_device(cfg.device))
    log.info("fine-tuning %s (%s) for task %s", cfg.init, run.checkpoint_dir.name, task.name)
    return task.finetune(run, cfg, flags)


def run(cfg: FinetuneConfig, flags: Flags) -> int:
    return finetune(cfg, flags)


VERB = Verb(
    name="finetune",
    summary="Fine-tune a run for a task: a classifier head (sst2, trec, ...) or SFT (generation).",
    config=FinetuneConfig,
    run=run,
    positionals=("init",),
    usage="lmforge finetune RUN task=NAME out=NEW_RUN [key=value ...]",
    flags=("--overwrite", "--debug", "--help"),
)
