"""Config models of `lmforge eval` and `lmforge finetune`, and the `task` section they share.

Schema only: the verbs live in `eval/run.py` and `finetune.py`, the tasks in `eval/tasks/`.
`task=sst2` is shorthand for `task.name=sst2` (a `NamedSection`); the remaining `task.*` keys
point a task at its files (the generic `classification` task needs `task.train/dev/test`).
Generation tasks add their own sections here (e.g. `decode`, `sft`); classification keeps its
fine-tuning keys under `classifier`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmforge.config import NamedSection, Section
from lmforge.runtime import DeviceName, DtypeName


class TaskSection(NamedSection):
    name: str | None = Field(
        None, description="task to run (default for eval: intrinsic loss/perplexity/bits-per-byte)"
    )
    dir: str | None = Field(
        None, description="folder with the task's files (default: $LMFORGE_SHARED_DATA/<task>)"
    )
    train: str | None = Field(None, description="training/few-shot pool file (overrides task.dir)")
    dev: str | None = Field(None, description="dev file for early stopping (overrides task.dir)")
    test: str | None = Field(None, description="test file to report on (overrides task.dir)")
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


class ClassifierSection(Section):
    pooling: Literal["mean", "last"] = Field(
        "mean", description="sentence vector: mean of hidden states or the last token's"
    )
    mode: Literal["full", "head"] = Field(
        "full", description="fine-tune the whole model (full) or only the new head (head)"
    )
    lr: float = Field(1e-3, gt=0, description="peak learning rate of the body (full mode)")
    head_lr: float | None = Field(None, gt=0, description="learning rate of the head (default: lr)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    epochs: int = Field(10, ge=1, description="maximum passes over the training set")
    batch_size: int = Field(32, ge=1, description="examples per optimizer step")
    max_len: int = Field(128, ge=2, description="truncate examples to this many tokens")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the pooled vector")
    warmup_frac: float = Field(0.05, ge=0, le=1, description="fraction of steps of linear warmup")
    evals_per_epoch: int = Field(2, ge=1, description="dev evaluations per epoch")
    patience: int = Field(4, ge=1, description="stop after this many dev evaluations without gain")
    max_time: float | None = Field(
        None, gt=0, description="stop training after this many seconds (then test the best)"
    )
    limit_train: int | None = Field(
        None, ge=1, description="use only the first N training examples (quick runs)"
    )


class SFTSection(Section):
    """Supervised fine-tuning (generation tasks): loss on response tokens only."""

    lr: float = Field(3e-4, gt=0, description="sft: peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="sft: AdamW weight decay")
    batch_size: int = Field(32, ge=1, description="sft: examples per optimizer step")
    # Off by default: grouped batches are less random (on copy_reverse, where length tracks the
    # kind of example, a 2-layer GPT reached 83% exact match in 800 steps instead of 100%).
    group_by_length: bool = Field(
        False,
        description="sft: batch examples of similar length together (far less padding, faster "
        "epochs, but less random batches; the order stays seeded)",
    )
    epochs: float = Field(
        3.0, gt=0, description="sft: passes over the training set (unless max_steps/max_time)"
    )
    max_steps: int | None = Field(None, ge=1, description="sft: optimizer steps (overrides epochs)")
    max_time: float | None = Field(
        None, gt=0, description="sft: training budget in seconds (the schedule follows it)"
    )
    warmup_steps: int = Field(50, ge=0, description="sft: linear warmup steps")
    max_len: int | None = Field(
        None, ge=2, description="sft: tokens per example (default: GPT context, LSTM 512)"
    )
    eval_every: int = Field(200, ge=1, description="sft: dev loss every N steps (best kept)")
    eval_batches: int = Field(10, ge=1, description="sft: dev batches per evaluation")
    limit_train: int | None = Field(
        None, ge=1, description="sft: use only the first N training examples (quick runs)"
    )
    evaluate: bool = Field(
        True, description="sft: score the best checkpoint on the test split when done"
    )
    eval_limit: int | None = Field(
        None, ge=1, description="sft: score only the first N test examples when done"
    )


class FinetuneConfig(Section):
    init: str | None = Field(None, description="run dir to start from (positional)")
    out: str | None = Field(None, description="the new run dir to write")
    checkpoint: str = Field("latest", description="checkpoint of init: latest | best | step_N")
    task: TaskSection = Field(default_factory=TaskSection)
    seed: int = Field(1337, description="seed for the head init, data order and dropout")
    device: DeviceName = Field("auto", description="auto | cpu | cuda | mps")
    dtype: DtypeName = Field("float32", description="autocast precision: float32 | bfloat16")
    threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    classifier: ClassifierSection = Field(default_factory=ClassifierSection)
    sft: SFTSection = Field(default_factory=SFTSection)
    decode: DecodeSection = Field(default_factory=DecodeSection)
