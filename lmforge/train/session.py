"""Deciding what a `lmforge train` invocation means for its run dir: start, overwrite or resume.

Owns the rules (an existing `out` needs --resume or --overwrite; a finished run resumes to "done";
overrides given with --resume apply on top of the saved config) and the lock. Building the model
and data is `trainer.py`'s job; this module only reads configs and checkpoint metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lmforge.config import deep_merge, validate_config
from lmforge.errors import CheckpointError, ConfigError
from lmforge.run import checkpoint as ckpt
from lmforge.run import rundir
from lmforge.run.config import TrainConfig
from lmforge.verb import Flags

log = logging.getLogger(__name__)


@dataclass
class Session:
    """A resolved invocation: the effective config and, when resuming, where from."""

    config: TrainConfig
    out: Path
    resume_dir: Path | None = None
    resume_state: dict[str, Any] | None = None
    finished_message: str | None = None  # set when --resume found nothing left to do


def resolve_session(config: TrainConfig, flags: Flags) -> Session:
    """The effective config and resume point (reads only; --overwrite deletes later, on rank 0)."""
    if config.out is None:
        raise ConfigError("missing required config key 'out' (the run dir); set out=runs/NAME")
    out = Path(config.out)
    if flags.resume:
        return _resume_session(config, out)
    if out.exists() and any(p.name != rundir.LOCK_FILE for p in out.iterdir()):
        if not flags.overwrite:
            raise ConfigError(
                f"out={out} already exists; pass --resume to continue it or --overwrite to "
                "start it over (or choose another out=)"
            )
    _require_data(config)
    return Session(_settled(config), out)


def _require_data(config: TrainConfig) -> None:
    """A readable data dir, checked before the run dir is created (a bad data= leaves no run)."""
    if config.data is None:
        raise ConfigError(
            "missing required config key 'data' (a data dir from 'lmforge prepare'); set data=PATH"
        )
    from lmforge.data.reader import DataDir

    DataDir.open(config.data)


# A run whose warm-up would take more than this fraction of its steps gets a shorter warm-up.
MAX_WARMUP_FRACTION = 0.1


def _settled(config: TrainConfig) -> TrainConfig:
    """The config as the run dir records it: the data dir as an absolute path (so `lmforge eval
    /abs/runs/x` works from any directory) and a warm-up that fits inside the run."""
    updates: dict[str, Any] = {}
    if config.data is not None and not Path(config.data).is_absolute():
        updates["data"] = str(Path(config.data).resolve())
    sched, max_steps = config.schedule, config.max_steps
    if max_steps is not None and "warmup_steps" not in sched.model_fields_set:
        if sched.warmup_steps > MAX_WARMUP_FRACTION * max_steps:
            warmup = int(MAX_WARMUP_FRACTION * max_steps)
            log.info(
                "warm-up shortened to %d steps (10%% of train.max_steps=%d; the default %d would "
                "not fit); set schedule.warmup_steps to choose",
                warmup,
                max_steps,
                sched.warmup_steps,
            )
            updates["schedule"] = sched.model_copy(update={"warmup_steps": warmup})
    elif max_steps is not None and sched.warmup_steps >= max_steps:
        log.warning(
            "warning: schedule.warmup_steps=%d >= train.max_steps=%d: the learning rate never "
            "reaches its peak; lower schedule.warmup_steps",
            sched.warmup_steps,
            max_steps,
        )
    return config.model_copy(update=updates) if updates else config


def _resume_session(cli_config: TrainConfig, out: Path) -> Session:
    if not (out / rundir.CONFIG_FILE).is_file():
        raise CheckpointError(
            f"nothing to resume: {out} is not a run dir (no {rundir.CONFIG_FILE}); "
            "start it without --resume"
        )
    saved = rundir.load_train_config(out)
    changes = explicit_values(cli_config)
    changes.pop("out", None)
    raw = deep_merge(saved.model_dump(mode="json", by_alias=True), changes)
    config = validate_config(TrainConfig, {**raw, "out": str(out)}, source=str(out))
    _require_data(config)
    root = out / rundir.CHECKPOINTS_DIR
    if not ckpt.list_checkpoints(root):
        log.warning("warning: %s has no checkpoint yet; starting it from step 0", out)
        return Session(config, out)
    path, state = ckpt.resolve_checkpoint(root, ckpt.LATEST, checksums=config.checkpoint.verify)
    session = Session(config, out, path, state)
    if state.get("finished") and _budget_spent(config, state):
        session.finished_message = (
            f"{out} already finished at step {state['step']}; nothing to do (to train longer, "
            + (
                "resume with a larger eval.patience: it stopped early)"
                if state.get("stopped") == "patience"
                else "resume with a larger train.max_steps or train.max_time)"
            )
        )
    return session


def _budget_spent(config: TrainConfig, state: dict[str, Any]) -> bool:
    if state.get("stopped") == "patience":
        # Early-stopped: resuming stops again at once unless eval.patience was raised (or unset).
        patience = config.eval.patience
        return patience is not None and state.get("evals_since_best", 0) >= patience
    if config.max_steps is not None and state["step"] >= config.max_steps:
        return True
    max_time = config.train.max_time
    return max_time is not None and state.get("elapsed_s", 0.0) >= max_time


def explicit_values(model: BaseModel) -> dict[str, Any]:
    """The keys a user actually set (recipe, overrides or positionals), as a nested dict."""
    dumped = model.model_dump(mode="json", by_alias=True)
    found: dict[str, Any] = {}
    for name in model.model_fields_set:
        field = type(model).model_fields[name]
        key = field.alias or name
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            sub = explicit_values(value)
            if sub and hasattr(value, "kind"):
                sub["kind"] = value.kind  # the discriminator decides which keys are valid
            if sub:
                found[key] = sub
        else:
            found[key] = dumped[key]
    return found


def prepare_out_dir(session: Session, flags: Flags) -> rundir.RunLock:
    """Create `out` (clearing it first for --overwrite) and lock it; rank 0 only."""
    out = session.out
    if flags.overwrite and not flags.resume and out.exists():
        with rundir.RunLock(out):  # refuse to delete a run another trainer is writing
            pass
        rundir.remove_run_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    return rundir.RunLock(out).acquire()
