"""The keys of `lmforge fit` and its CLI verb; imports no numpy/scipy, so `--help` stays fast.

The fitting itself lives in `fit_verb.run` (imported when the verb runs), which reads the runs
(`fit_table`), fits (`fit_approach3`, `fit_isoflop`) and writes fit.json and plots.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmforge.config import Section
from lmforge.verb import Verb

# Keep in step with fit_table.SMALL_N (not imported: that module pulls in numpy).
_SMALL_N = 100_000


class FitColumns(Section):
    """Which column of the table (or key of sweep.json's points) holds each quantity."""

    n: str | None = Field(
        None, description="parameters N; default from n_kind (N, N_non_embedding, ...)"
    )
    d: str | None = Field(None, description="training tokens D; default 'D', else C / (6 N)")
    c: str | None = Field(None, description="training compute C (FLOPs); default 'C' if present")
    loss: str = Field("loss", description="final loss (nats per token)")


class FitConfig(Section):
    """The keys of `lmforge fit`."""

    source: str = Field(..., description="a sweep dir (with sweep.json) or a .csv / .jsonl table")
    out: str | None = Field(
        None, description="output dir; default the sweep dir, or <table stem>.fit/ beside a table"
    )
    columns: FitColumns = Field(default_factory=FitColumns)
    n_kind: Literal["total", "non_embedding", "non_embedding_with_head"] = Field(
        "total", description="which parameter count N is (picks the default N column)"
    )
    exclude_small: bool = Field(
        False, description=f"leave out runs under {_SMALL_N} parameters (they are always flagged)"
    )
    exclude_highest_loss: int = Field(
        0, ge=0, description="leave out the k highest-loss runs (Besiroglu et al. drop 5 outliers)"
    )
    huber_delta: float = Field(1e-3, gt=0, description="Huber loss δ on log-loss residuals")
    starts: int = Field(
        0, ge=0, description="L-BFGS-B starts: 0 = the whole 4500-point grid, k = its k best points"
    )
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples (0: no intervals)")
    ci: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")
    isoflop_step: float = Field(
        0.1, gt=0, description="IsoFLOP budgets: runs with equal round(log10 C / step) share one"
    )
    seed: int = Field(0, description="seed of the bootstrap resampling")
    workers: int = Field(0, ge=0, description="processes for the fits (0: the available cores)")
    plots: bool = Field(True, description="write plots/fit_*.png")


VERB = Verb(
    name="fit",
    summary="Fit scaling laws (Approach 3 and IsoFLOP) to a sweep dir or a table of runs.",
    config=FitConfig,
    run="lmforge.lab.fit_verb:run",
    positionals=("source",),
    usage="lmforge fit SOURCE [out=DIR] [key=value ...]",
)
