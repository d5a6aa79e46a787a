"""LoRA for every kind of fine-tuning: turn `lora.*` into adapters on the model before training.

`prepare_lora` freezes the loaded model and puts fresh adapters on its targeted linear layers; the
returned `Adapter` (spec + base reference) is what the published run records, so `load_run` finds
the base again and checks its weights' sha256. The training loops (`sft.py`, `classifier.py`) are
unchanged: the optimizer only ever sees parameters that require gradients.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.errors import ConfigError
from lmforge.finetune.config import FinetuneConfig
from lmforge.models.lora import LoRASpec, adapter_parameters, apply_lora
from lmforge.run import checkpoint as ckpt
from lmforge.run import rundir

if TYPE_CHECKING:
    from lmforge.run.rundir import LoadedRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Adapter:
    """A LoRA fine-tuning's spec and the base it adapts (`rundir.base_reference`)."""

    spec: LoRASpec
    base: dict[str, Any]

    def as_tuple(self) -> tuple[LoRASpec, dict[str, Any]]:
        return self.spec, self.base


def prepare_lora(run: LoadedRun, cfg: FinetuneConfig) -> Adapter | None:
    """Adapters on `run.model` (in place, base frozen) when `lora.rank` is set; else None."""
    if not cfg.lora.enabled:
        return None
    if cfg.classifier.mode == "head" and cfg.task.name and _is_classification(cfg.task.name):
        raise ConfigError(
            "lora.rank with classifier.mode=head: head-only training has no adapters to train; "
            "use classifier.mode=full (adapters + head) or unset lora.rank"
        )
    assert cfg.lora.rank is not None and cfg.out is not None
    spec = LoRASpec(cfg.lora.rank, cfg.lora.scale_alpha, cfg.lora.dropout, tuple(cfg.lora.targets))
    base = rundir.base_reference(run, cfg.out)
    names = apply_lora(run.model, spec)
    trained = sum(p.numel() for p in adapter_parameters(run.model))
    total = sum(p.numel() for p in run.model.parameters())
    log.info(
        "LoRA rank %d (alpha %g) on %d layers: %s trainable of %s parameters (%.2f%%)",
        spec.rank,
        spec.alpha,
        len(names),
        f"{trained:,}",
        f"{total:,}",
        100 * trained / max(total, 1),
    )
    return Adapter(spec, base)


def _is_classification(task: str) -> bool:
    from lmforge.eval.tasks import get_task

    return get_task(task).kind == "classification"


def convert_checkpoints(run_dir: Path, adapter: Adapter) -> None:
    """Every trainer checkpoint in `run_dir` rewritten to hold the adapter only."""
    for _, path in ckpt.list_checkpoints(run_dir / rundir.CHECKPOINTS_DIR):
        if (path / "model.safetensors").is_file():
            rundir.to_adapter_checkpoint(path, adapter.spec, adapter.base)
