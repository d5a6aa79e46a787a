"""Publishing a fine-tuned run dir: check `out` up front, train into a temp dir, rename at the end.

Written once for every kind of fine-tuning, so a failure or Ctrl-C never leaves a half-written
`out`: the work happens in `.<name>.partial/` beside it, which becomes `out` only when complete.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.errors import ConfigError
from lmforge.run.rundir import FINETUNE_CONFIG, remove_run_dir  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from lmforge.finetune.config import FinetuneConfig
    from lmforge.verb import Flags

log = logging.getLogger(__name__)


def check_out(cfg: FinetuneConfig, flags: Flags) -> Path:
    """The output run dir, checked before any training: set, and new unless --overwrite."""
    if not cfg.out:
        raise ConfigError("finetune needs out=DIR for the new run dir (e.g. out=runs/x-sst2)")
    out = Path(cfg.out)
    if cfg.init and out.resolve() == Path(cfg.init).resolve():
        raise ConfigError(f"out={cfg.out} is the run being fine-tuned; choose a new directory")
    if out.exists() and any(out.iterdir()) and not flags.overwrite:
        raise ConfigError(f"{out} already exists; choose another out= or pass --overwrite")
    return out


def partial_dir(out: Path) -> Path:
    """Where a fine-tuning of `out` is written until it is complete (hidden, beside `out`)."""
    return out.parent / f".{out.name}.partial"


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
