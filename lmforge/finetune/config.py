"""`FinetuneConfig`: every key `lmforge finetune` accepts (schema only).

`task` and `decode` are eval's sections (a task is named and pointed at its files the same way for
both verbs); `classifier` and `sft` hold the training keys of the two kinds of fine-tuning; `lora`
turns any of them into LoRA fine-tuning (`lora.rank` set); `qa` picks how a QA task is learned.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lmforge.config import DeviceName, Section
from lmforge.eval.config import DecodeSection, TaskSection


class ClassifierSection(Section):
    pooling: Literal["mean", "max", "last"] = Field(
        "mean",
        description="sentence vector: mean or max of the hidden states, or the last token's",
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
    # kind of example: benchmarks/results/sft_grouping.json, copy_reverse dev exact match).
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


class LoRASection(Section):
    """LoRA adapters (Hu et al. 2021) instead of full fine-tuning, when `rank` is set."""

    rank: int | None = Field(
        None, ge=1, description="adapter rank; unset: full fine-tuning (every weight trains)"
    )
    alpha: float | None = Field(None, gt=0, description="adapter scale numerator (default 2*rank)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input")
    targets: list[str] = Field(
        ["q_proj", "v_proj"],
        description="linear layers to adapt: names (q_proj, k_proj, v_proj, o_proj, gate_proj, "
        "up_proj, down_proj) or all-linear",
    )

    @field_validator("targets", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        # `lora.targets=all-linear` and `lora.targets=q_proj,v_proj` arrive as one string.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def enabled(self) -> bool:
        return self.rank is not None

    @property
    def scale_alpha(self) -> float:
        """`alpha` resolved (PEFT-style default: twice the rank)."""
        assert self.rank is not None
        return self.alpha if self.alpha is not None else 2.0 * self.rank


class QASection(Section):
    """Question answering (squad): generative SFT or an extractive span head."""

    head: Literal["generate", "span"] = Field(
        "generate",
        description="generate: SFT writes the answer; span: a start/end head picks it from the "
        "context (extractive, like BERT readers)",
    )
    max_answer_len: int = Field(30, ge=1, description="span: longest answer span, in tokens")
    stride: int = Field(
        64, ge=0, description="span: tokens of overlap between windows of a long context"
    )


class FinetuneConfig(Section):
    init: str | None = Field(None, description="run dir to start from (positional)")
    out: str | None = Field(None, description="the new run dir to write")
    checkpoint: str = Field("latest", description="checkpoint of init: latest | best | step_N")
    task: TaskSection = Field(default_factory=TaskSection)
    seed: int = Field(1337, description="seed for the head init, data order and dropout")
    device: DeviceName = Field("auto", description="auto | cpu | cuda | mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32",
        description="autocast precision: float32 | bfloat16 | auto (bf16 where this machine's "
        "measured bf16 matmul is faster, as `lmforge train` picks)",
    )
    dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="dropout inside the model while fine-tuning (embeddings, attention, residuals; "
        "LSTM: between layers and before the head); default: the run's own (usually 0)",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    classifier: ClassifierSection = Field(default_factory=ClassifierSection)
    sft: SFTSection = Field(default_factory=SFTSection)
    lora: LoRASection = Field(default_factory=LoRASection)
    qa: QASection = Field(default_factory=QASection)
    decode: DecodeSection = Field(default_factory=DecodeSection)
