"""Where a fine-tuning trains and how it is published: a partial dir beside `out`, then a rename.

Written once for every kind of fine-tuning, so a failure or Ctrl-C never leaves a half-written
`out`: the work happens in `.<name>.partial/` beside it (checkpoints, metrics.jsonl, plots), which
becomes `out` (SFT) or is turned into it (classifier) only when complete. An interrupted
fine-tuning keeps its partial dir; `--resume` continues it from its latest checkpoint, and without
`--resume` (or `--overwrite`, which starts over) a leftover partial dir is an error.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.errors import ConfigError
from lmforge.run import checkpoint as ckpt
from lmforge.run.rundir import (  # noqa: F401 - FINETUNE_CONFIG re-exported
    CHECKPOINTS_DIR,
    FINETUNE_CONFIG,
    RunLock,
    remove_run_dir,
)

if TYPE_CHECKING:
    from lmforge.finetune.config import FinetuneConfig
    from lmforge.verb import Flags

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resume:
    """The checkpoint of a partial dir that a `--resume` continues from, and its `state.json`."""

    checkpoint: Path
    state: dict[str, Any]


def check_out(cfg: FinetuneConfig, flags: Flags) -> Path:
    """The output run dir, checked before any training: set, new unless --overwrite, and with
    --resume an unfinished fine-tuning of it to continue."""
    if not cfg.out:
        raise ConfigError("finetune needs out=DIR for the new run dir (e.g. out=runs/x-sst2)")
    out = Path(cfg.out)
    if cfg.init and out.resolve() == Path(cfg.init).resolve():
        raise ConfigError(f"out={cfg.out} is the run being fine-tuned; choose a new directory")
    partial = partial_dir(out)
    finished = out.exists() and any(out.iterdir())
    if flags.resume:
        if partial.is_dir():
            return out
        if finished:
            raise ConfigError(
                f"{out} is finished; nothing to resume (pass --overwrite instead of --resume to "
                "fine-tune it again)"
            )
        raise ConfigError(
            f"nothing to resume: no unfinished fine-tuning of {out} ({partial} does not exist); "
            "start it without --resume"
        )
    if finished and not flags.overwrite:
        raise ConfigError(f"{out} already exists; choose another out= or pass --overwrite")
    if partial.exists() and not flags.overwrite:
        raise ConfigError(
            f"an unfinished fine-tuning of {out} is in {partial}; pass --resume to continue it "
            "or --overwrite to start over"
        )
    return out


def partial_dir(out: Path) -> Path:
    """Where a fine-tuning of `out` is written until it is complete (hidden, beside `out`)."""
    return out.parent / f".{out.name}.partial"


def start_partial(out: Path, flags: Flags) -> tuple[Path, Resume | None]:
    """The partial dir to train in, fresh or (with --resume) with the checkpoint to continue
    from. Call after `check_out`."""
    partial = partial_dir(out)
    if flags.resume:
        root = partial / CHECKPOINTS_DIR
        if ckpt.list_checkpoints(root):
            path, state = ckpt.resolve_checkpoint(root, ckpt.LATEST)
            log.info("resuming %s from %s (step %d)", out, path.name, state["step"])
            return partial, Resume(path, state)
        log.warning("warning: %s has no checkpoint yet; starting it from step 0", partial)
    if partial.exists():
        with RunLock(partial):  # refuse to delete a partial dir another process is training
            pass
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    return partial, None


def resume_command(cfg: FinetuneConfig, flags: Flags) -> str:
    """The command that continues this fine-tuning: the one typed, with --resume."""
    if flags.argv:
        args = [a for a in flags.argv if a not in ("--overwrite", "--resume")]
        return shlex.join([*args, "--resume"])
    head = ["lmforge", "finetune", str(cfg.init), f"task={cfg.task.name}", f"out={cfg.out}"]
    return shlex.join(head) + " [the same key=value ...] --resume"


def publish(tmp: Path, out: Path, flags: Flags) -> None:
    """Move the finished run dir `tmp` into place (replacing `out` only with --overwrite)."""
    if out.exists():
        if any(out.iterdir()):
            if not flags.overwrite:
                raise ConfigError(f"{out} appeared while training; the new run is in {tmp}")
            remove_run_dir(out)
        else:
            out.rmdir()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    log.info("wrote %s", out)


def discard(tmp: Path) -> None:
    """Remove a temp dir left by a failed attempt (nothing else is ever deleted here)."""
    if tmp.exists():
        shutil.rmtree(tmp)
