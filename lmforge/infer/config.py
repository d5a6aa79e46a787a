"""`GenerateConfig` and the `generate` verb: the keys `lmforge generate` accepts (schema only).

The work is in `cli.py` (loaded when the verb runs); nothing here imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from lmforge.config import DeviceName, DtypeName, LinearKernelName, Section
from lmforge.verb import Verb

if TYPE_CHECKING:
    from lmforge.infer.generator import GenerationParams

_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\r": "\r"}


class GenerateConfig(Section):
    run: str | None = Field(None, description="run dir to generate with (positional)")
    prompt: str | None = Field(
        None, description="text to continue (positional; '' starts a document, '-' reads stdin)"
    )
    prompts: str | None = Field(
        None,
        description="file of prompts (.jsonl with a 'prompt' field, else one per line); "
        "writes JSONL results to stdout",
    )
    max_new_tokens: int = Field(256, ge=1, description="tokens to generate per prompt")
    temperature: float = Field(0.8, ge=0, description="sampling temperature (0: greedy)")
    top_k: int | None = Field(None, ge=1, description="sample among the k likeliest tokens")
    top_p: float | None = Field(
        None, gt=0, le=1, description="sample among the likeliest tokens holding this mass"
    )
    repetition_penalty: float = Field(
        1.0, gt=0, description="> 1 discourages tokens already in the text (CTRL; 1: off)"
    )
    stop: list[str] = Field(
        [],
        description="stop at any of these strings (not printed); \\n and \\t are understood",
    )
    seed: int | None = Field(None, description="seed for sampling (unset: different each run)")
    num_samples: int = Field(1, ge=1, description="continuations per prompt")
    beam_size: int = Field(1, ge=1, description="> 1: beam search (deterministic, not streamed)")
    checkpoint: str = Field("latest", description="which checkpoint: latest | best | step_N")
    batch_size: int = Field(8, ge=1, description="prompts=FILE: prompts decoded together")
    dtype: DtypeName = Field(
        "float32", description="weights and cache precision: float32 | bfloat16 | float16"
    )
    device: DeviceName = Field("auto", description="auto | cpu | cuda | mps")
    linear_kernel: LinearKernelName = Field(
        "auto",
        description="kernel for fp32 linears on 2-64 rows (decode batches): auto (the faster, "
        "measured at start-up) | mkl | onednn (a packed weight copy)",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    compile: bool = Field(
        False,
        description="compile the GPT's decode step: ~2x faster decoding on CPU after a "
        "one-off compile of tens of seconds (cached on disk)",
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list):
            return value
        return [_unescape(v) if isinstance(v, str) else v for v in values]

    def params(self, stop_ids: tuple[int, ...]) -> GenerationParams:
        from lmforge.infer.generator import GenerationParams

        return GenerationParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            stop_ids=stop_ids,
            stop=tuple(self.stop),
            seed=self.seed,
        )


def _unescape(text: str) -> str:
    """`\\n` typed on a command line means a newline here (a shell passes it as two characters)."""
    for escaped, char in _ESCAPES.items():
        text = text.replace(escaped, char)
    return text


VERB = Verb(
    name="generate",
    summary="Continue a prompt with a trained run (streamed to stdout), or open a session (-i).",
    config=GenerateConfig,
    run="lmforge.infer.cli:run",
    positionals=("run", "prompt"),
    usage='lmforge generate RUN "PROMPT" [key=value ...] [-i]',
    flags=("-i", "--debug", "--help"),
)
