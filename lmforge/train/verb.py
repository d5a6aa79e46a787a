"""The `train` verb: its config (`TrainConfig`, in the run-dir room) and usage, without importing
torch; the loop is `trainer.py`, loaded when the verb runs."""

from __future__ import annotations

from lmforge.run.config import TrainConfig
from lmforge.verb import Verb

VERB = Verb(
    name="train",
    summary="Train a language model on a data dir; writes (or resumes) the run dir `out`.",
    config=TrainConfig,
    run="lmforge.train.trainer:run",
    positionals=("out",),
    usage="lmforge train [RECIPE] [OUT] data=DATA_DIR [key=value ...] [--resume|--overwrite]",
    flags=("--resume", "--overwrite", "--debug", "--help"),
)
