"""The `export` and `import` verbs: their configs and usage, without importing torch (the work
is in `export.py` and `importer.py`, loaded when a verb runs)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmforge.config import Section
from lmforge.verb import Verb


class ExportConfig(Section):
    """The keys of `lmforge export`."""

    run: str = Field(..., description="the run dir to export (written by train/finetune/import)")
    out: str = Field(..., description="the Hugging Face model directory to create")
    format: Literal["hf", "peft"] = Field(
        "hf",
        description="output format: hf (transformers model dir; a LoRA run is merged) or peft "
        "(a LoRA run's adapter: adapter_config.json + adapter_model.safetensors)",
    )
    checkpoint: str = Field("latest", description="which checkpoint: latest | best | step_N")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype of the exported weights"
    )


class ImportConfig(Section):
    """The keys of `lmforge import`."""

    source: str = Field(
        ...,
        description="a local Hugging Face model dir (GPT-2 or Llama family) or PEFT adapter dir",
    )
    out: str = Field(..., description="the run dir to create")
    base: str | None = Field(
        None, description="PEFT adapter: the lmforge run whose export the adapter was made for"
    )


EXPORT_VERB = Verb(
    name="export",
    summary="Export a run's checkpoint as a Hugging Face model dir (Llama or GPT-2 layout).",
    config=ExportConfig,
    run="lmforge.interop.export:run",
    positionals=("run", "out"),
    usage="lmforge export RUN OUT [format=hf|peft] [checkpoint=latest|best|step_N] [dtype=float32] "
    "[--overwrite]",
    flags=("--overwrite", "--debug", "--help"),
)


IMPORT_VERB = Verb(
    name="import",
    summary="Import a local Hugging Face GPT-2 or Llama model dir as an lmforge run dir.",
    config=ImportConfig,
    run="lmforge.interop.importer:run",
    positionals=("source", "out"),
    usage="lmforge import HF_DIR OUT [--overwrite] | lmforge import ADAPTER_DIR OUT base=RUN",
    flags=("--overwrite", "--debug", "--help"),
)
