"""The `eval` verb: its config and usage, without importing torch (the work is in `run.py`)."""

from __future__ import annotations

from lmforge.eval.config import EvalConfig
from lmforge.verb import Verb

VERB = Verb(
    name="eval",
    summary="Evaluate runs: loss/perplexity/bits-per-byte, or a task (task=sst2, trec, ...).",
    config=EvalConfig,
    run="lmforge.eval.run:run",
    positionals=("runs*",),
    usage="lmforge eval RUN [RUN ...] [task=NAME] [key=value ...]",
)
