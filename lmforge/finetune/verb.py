"""`lmforge finetune RUN task=NAME out=NEW_RUN [key=value ...]`: adapt a trained run to a task.

Dispatch by the task's kind: a classification task gets a classification head trained through the
Trainer (`classifier.py`); a generation task gets supervised fine-tuning on its prompt/response
pairs (`sft.py`), or with `qa.head=span` an extractive span head (`span_qa.py`). `lora.rank` puts
LoRA adapters on the model first (`adapters.py`), whatever the kind. Either way the result is a new
run dir that `eval`, `generate` and `export` accept, published only when complete (`publish.py`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from lmforge.errors import ConfigError
from lmforge.finetune.config import FinetuneConfig
from lmforge.verb import Flags, Verb

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def finetune(cfg: FinetuneConfig, flags: Flags | None = None) -> int:
    """Library entry point: load `cfg.init`, fine-tune it for `cfg.task`, return the exit code."""
    from lmforge.eval.tasks import TASKS, get_task
    from lmforge.finetune.adapters import prepare_lora
    from lmforge.finetune.publish import check_out
    from lmforge.models.registry import with_dropout
    from lmforge.run.rundir import load_run
    from lmforge.runtime import resolve_device, set_threads

    flags = flags or Flags()
    if not cfg.init:
        raise ConfigError("finetune needs the run to start from: lmforge finetune runs/x task=...")
    if not cfg.task.name:
        known = ", ".join(sorted(TASKS))
        raise ConfigError(f"finetune needs task=NAME (one of: {known})")
    task = get_task(cfg.task.name)
    if task.kind not in ("classification", "generation"):
        raise ConfigError(
            f"task '{task.name}' ({task.kind}) is evaluated zero/few-shot only; use 'lmforge eval' "
            "(finetune a classification or generation task instead)"
        )
    check_out(cfg, flags)
    set_threads(cfg.threads)
    run = load_run(cfg.init, cfg.checkpoint, resolve_device(cfg.device))
    log.info("fine-tuning %s (%s) for task %s", cfg.init, run.checkpoint_dir.name, task.name)
    if cfg.dropout is not None:
        model, model_config = with_dropout(run.model, run.model_config, cfg.dropout)
        run = dataclasses.replace(run, model=model, model_config=model_config)
    cfg = _resolve_dtype(cfg, next(run.model.parameters()).device)
    adapter = prepare_lora(run, cfg)
    if task.kind == "classification":
        from lmforge.finetune.classifier import finetune_classifier

        data = task.load(cfg.task, ("train", "dev", "test"))  # type: ignore[attr-defined]
        return finetune_classifier(task.name, data, run, cfg, flags, adapter)
    if cfg.qa.head == "span":
        from lmforge.finetune.span_qa import finetune_span_qa

        return finetune_span_qa(task, run, cfg, flags, adapter)
    from lmforge.finetune.sft import finetune_sft

    generation = task.for_run(run)  # type: ignore[attr-defined] - e.g. chat takes run's template
    return finetune_sft(generation, run, cfg, flags, adapter)


def _resolve_dtype(cfg: FinetuneConfig, device: torch.device) -> FinetuneConfig:
    """`dtype=auto` made concrete once, as `lmforge train` decides it (measured matmul peaks,
    cached per machine), so the run's finetune.toml records what was used."""
    if cfg.dtype != "auto":
        return cfg
    import torch

    from lmforge.train.peak import choose_dtype

    name = str(choose_dtype(device, torch.get_num_threads())).removeprefix("torch.")
    log.info("dtype=auto: %s on this machine", name)
    return cfg.model_copy(update={"dtype": name})


def run(cfg: FinetuneConfig, flags: Flags) -> int:
    return finetune(cfg, flags)


VERB = Verb(
    name="finetune",
    summary="Fine-tune a run for a task: a classifier head (sst2, trec, ...) or SFT (generation).",
    config=FinetuneConfig,
    run=run,
    positionals=("init",),
    usage="lmforge finetune RUN task=NAME out=NEW_RUN [key=value ...] [--resume|--overwrite]",
    flags=("--resume", "--overwrite", "--debug", "--help"),
)
