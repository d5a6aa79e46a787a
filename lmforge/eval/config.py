"""Config model of `lmforge eval`, and the `task` and `decode` sections fine-tuning shares.

Schema only: the verb lives in `eval/run.py`, the tasks in `eval/tasks/`; fine-tuning's own keys
are in `lmforge/finetune/config.py`.
`task=sst2` is shorthand for `task.name=sst2` (a `NamedSection`); the remaining `task.*` keys
point a task at its files (the generic `classification` task needs `task.train/dev/test`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmforge.config import DeviceName, DtypeName, NamedSection, Section


class TaskSection(NamedSection):
    name: str | None = Field(
        None,
        description="task name (eval: unset scores loss/perplexity/bits-per-byte; finetune: "
        "required)",
    )
    dir: str | None = Field(
        None, description="folder with the task's files (default: $LMFORGE_SHARED_DATA/<task>)"
    )
    train: str | None = Field(None, description="training/few-shot pool file (overrides task.dir)")
    dev: str | None = Field(None, description="dev file for early stopping (overrides task.dir)")
    test: str | None = Field(None, description="test file to report on (overrides task.dir)")
    split: Literal["dev", "test"] = Field(
        "test",
        description="generation tasks: split to score (test: the final report, scored once; "
        "dev: for anything that chooses settings or checkpoints)",
    )
    format: Literal["auto", "lines", "jsonl", "csv"] = Field(
        "auto", description="file format: '<label> <text>' lines, jsonl or csv (auto: by suffix)"
    )
    text_field: str = Field("text", description="jsonl/csv: the field holding the text")
    label_field: str = Field("label", description="jsonl/csv: the field holding the label")
    labels: list[str] | None = Field(
        None, description="label values in class order (default: sorted labels of the train file)"
    )
    verbalizers: list[str] | None = Field(
        None, description="few-shot: the word scored for each label (default: the label itself)"
    )
    template: str | None = Field(
        None, description="few-shot prompt for one example; '{text}' is replaced (task default)"
    )
    target_delimiter: str = Field(
        " ", description="put between the prompt and the scored answer (lm-eval's default ' ')"
    )


class DecodeSection(Section):
    """How generation tasks (translation, QA, SFT tasks) decode their answers."""

    beam_size: int = Field(
        4, ge=1, description="generation tasks: beam width for the beam scores (1: greedy only)"
    )
    max_new_tokens: int | None = Field(
        None, ge=1, description="generation tasks: longest answer in tokens (default: per task)"
    )
    batch_size: int = Field(32, ge=1, description="generation tasks: prompts decoded together")
    length_penalty: float = Field(
        1.0, description="beam: rank finished answers by score / length**length_penalty"
    )


class EvalConfig(Section):
    runs: list[str] = Field(
        [], description="run dirs to evaluate (positional; several: side by side)"
    )
    checkpoint: str = Field("latest", description="which checkpoint: latest | best | step_N")
    task: TaskSection = Field(default_factory=TaskSection)
    split: Literal["val", "train"] = Field("val", description="intrinsic: data split to score")
    text: str | None = Field(None, description="intrinsic: score this text file instead of a split")
    stride: int | None = Field(
        None, ge=1, description="intrinsic: sliding-window step in tokens (default: half a window)"
    )
    window: int | None = Field(
        None, ge=2, description="intrinsic: tokens per window (default: the model's context)"
    )
    max_tokens: int | None = Field(
        None, ge=2, description="intrinsic: score at most this many tokens (default: all)"
    )
    shots: int = Field(0, ge=0, description="few-shot: in-context examples per prompt")
    seed: int = Field(1234, description="seed for choosing few-shot examples")
    batch_size: int = Field(16, ge=1, description="sequences per forward pass")
    limit: int | None = Field(None, ge=1, description="tasks: evaluate only the first N examples")
    device: DeviceName = Field("auto", description="auto | cpu | cuda | mps")
    dtype: DtypeName = Field("float32", description="autocast precision: float32 | bfloat16")
    threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    data: str | None = Field(
        None, description="intrinsic: data dir to score (default: the run's training data)"
    )
    decode: DecodeSection = Field(default_factory=DecodeSection)
