"""Training: `lmforge train`, checkpoints and resume, run dirs, DDP/FSDP scale-out.

`run(config)` is the library entry point (what the CLI calls); `rundir.load_run` reads a run dir
at a checkpoint for the other verbs. Submodules import lazily, so nothing heavy runs at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmforge.run.config import TrainConfig
    from lmforge.verb import Flags


def run(config: TrainConfig, flags: Flags | None = None) -> int:
    """Train as `lmforge train` would; returns the exit code (0: done)."""
    from lmforge.train.trainer import run as run_training
    from lmforge.verb import Flags

    return run_training(config, flags or Flags())
