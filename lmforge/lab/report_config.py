"""The keys of `lmforge report` and its CLI verb; imports no torch, so `--help` stays fast."""

from __future__ import annotations

from pydantic import Field

from lmforge.config import Section
from lmforge.verb import Verb


class ReportConfig(Section):
    """The keys of `lmforge report`."""

    dir: str = Field(..., description="a run dir or a sweep dir (with sweep.json)")
    out: str | None = Field(
        None, description="where report.html and report.md go (default: DIR itself)"
    )
    prompt: str | None = Field(
        None,
        description="GPT runs: the prompt for attention maps and the logit lens "
        "(default: sample.prompt, else the start of the validation text)",
    )
    prompt_tokens: int = Field(
        24, ge=2, le=128, description="at most this many prompt tokens in the attention maps"
    )
    checkpoint: str = Field("latest", description="which checkpoint to inspect: latest|best|step_N")
    fit: bool = Field(
        True, description="sweeps: fit scaling laws when fit.json is missing (lmforge fit)"
    )
    bootstrap: int = Field(200, ge=0, description="sweeps: bootstrap resamples for that fit")
    starts: int = Field(
        100, ge=0, description="sweeps: L-BFGS-B starts for that fit (0: the full 4500-point grid)"
    )


VERB = Verb(
    name="report",
    summary="Write report.html (self-contained) and report.md for a run dir or a sweep dir.",
    config=ReportConfig,
    run="lmforge.lab.report:run",
    positionals=("dir",),
    usage="lmforge report DIR [out=DIR] [prompt=TEXT] [key=value ...]",
)
