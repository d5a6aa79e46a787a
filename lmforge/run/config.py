"""`TrainConfig`: every key `lmforge train` accepts, with defaults and one-line descriptions.

Owns the schema only (validation and derived values); the loop lives in `trainer.py`. The resolved
config is saved as `config.toml` in the run dir, so a checkpoint never needs the original flags.
`init.from` is a Python keyword, so the field is `from_` with the alias `from`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from lmforge.config import DeviceName, LinearKernelName, Section
from lmforge.models.config import GPTConfig, ModelConfig


class TrainSection(Section):
    max_steps: int | None = Field(
        None, ge=1, description="optimizer steps to run (default 1000 unless max_time is set)"
    )
    max_time: float | None = Field(
        None, gt=0, description="wall-clock training budget in seconds; the schedule follows it"
    )
    batch_size: int = Field(32, ge=1, description="sequences per forward pass on each process")
    seq_len: int | None = Field(
        None, ge=1, description="tokens per sequence (default: GPT max_seq_len, LSTM 128)"
    )
    batch_tokens: int | None = Field(
        None,
        ge=1,
        description="global tokens per optimizer step; > batch_size*seq_len*ranks accumulates",
    )
    grad_clip: float | None = Field(1.0, description="clip the global grad norm (0/none: off)")
    sampling: Literal["auto", "random", "sequential"] = Field(
        "auto",
        description="random windows, or contiguous streams per row (auto: LSTM sequential)",
    )
    log_every: int = Field(10, ge=1, description="write a metrics.jsonl row every N steps")
    print_every: int = Field(100, ge=1, description="log a progress line every N steps")
    threads: int | None = Field(
        None, ge=1, description="CPU threads (default: OMP_NUM_THREADS, else all cores)"
    )
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp", description="under torchrun: replicate (ddp) or shard with FSDP2 (fsdp)"
    )
    max_bad_steps: int = Field(
        5, ge=1, description="stop after this many non-finite losses in a row"
    )
    peak_tflops: float | None = Field(
        None, gt=0, description="device peak TFLOP/s for MFU (default: measured once, cached)"
    )
    tensorboard: bool = Field(True, description="write TensorBoard events under tb/")
    tune_malloc: bool = Field(
        True, description="CPU: keep freed buffers in glibc's heap (~20% faster steps)"
    )
    linear_kernel: LinearKernelName = Field(
        "auto",
        description="CPU linear layers: mkl (torch's F.linear) | onednn | auto (measured faster)",
    )
    attention_kernel: Literal["auto", "sdpa", "math"] = Field(
        "auto",
        description="causal attention while training: sdpa (torch's fused kernel) | math "
        "(matmuls + softmax) | auto (measured faster at the run's shape, CPU)",
    )


class OptimSection(Section):
    name: Literal["adamw", "sgd", "muon"] = Field(
        "adamw", description="adamw | sgd | muon (Muon for hidden matrices, AdamW for the rest)"
    )
    lr: float = Field(3e-4, gt=0, description="peak learning rate (AdamW/SGD groups)")
    weight_decay: float = Field(0.1, ge=0, description="decoupled weight decay on 2-D weights")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW beta2")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    muon_lr: float | None = Field(
        None, gt=0, description="Muon group peak lr (default: optim.lr; updates RMS-matched)"
    )
    muon_momentum: float = Field(0.95, ge=0, lt=1, description="Muon momentum")
    muon_ns_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Muon's Newton-Schulz precision: auto (bf16 on GPUs and on CPUs whose "
        "measured bf16 matmul is >= 1.5x fp32's, else fp32) | float32 | bfloat16",
    )
    fused: bool | None = Field(
        None, description="fused AdamW kernel (default: on where the device supports it)"
    )


class ScheduleSection(Section):
    kind: Literal["cosine", "wsd", "constant"] = Field(
        "cosine", description="cosine (to the floor), wsd (warmup-stable-decay) or constant"
    )
    warmup_steps: int = Field(100, ge=0, description="linear warmup steps")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="floor as a fraction of peak lr")
    decay_frac: float = Field(0.2, ge=0, le=1, description="wsd: fraction of the run that decays")


class CheckpointSection(Section):
    every: int | None = Field(
        None, ge=1, description="checkpoint every N steps (default: eval.every)"
    )
    keep_last: int = Field(2, ge=1, description="keep the newest K step checkpoints (+ best)")
    verify: bool = Field(True, description="verify sha256 checksums when loading")


class EvalSection(Section):
    every: int = Field(250, ge=1, description="validation loss every N steps (and at the end)")
    batches: int = Field(20, ge=1, description="validation batches per evaluation")
    patience: int | None = Field(
        None, ge=1, description="stop after N evaluations without a new best (default: off)"
    )


class SampleSection(Section):
    every: int | None = Field(
        None, ge=0, description="write a sample every N steps (default: eval.every; 0: off)"
    )
    prompt: str = Field("", description="sample prompt (empty: start of a document)")
    max_new_tokens: int = Field(200, ge=1, description="tokens per sample")
    temperature: float = Field(0.8, ge=0, description="sampling temperature (0: greedy)")
    top_k: int | None = Field(50, ge=1, description="sample among the k likeliest tokens")


class InitSection(Section):
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        protected_namespaces=(),
        populate_by_name=True,
        serialize_by_alias=True,
    )

    from_: str | None = Field(
        None, alias="from", description="start from this run dir's weights (continued pretraining)"
    )
    checkpoint: str = Field(
        "latest", description="which checkpoint of init.from: latest|best|step_N"
    )


class TrainConfig(Section):
    data: str | None = Field(None, description="data dir written by 'lmforge prepare'")
    out: str | None = Field(None, description="the run dir to create (or resume)")
    seed: int = Field(1337, description="seed for init, data order, dropout and samples")
    device: DeviceName = Field("auto", description="auto | cpu | cuda | mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32",
        description="autocast precision: float32 | bfloat16 | float16 (GPU) | auto (fastest)",
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile the model: true | false | auto (when the run is long enough)",
    )
    model: ModelConfig = Field(default_factory=GPTConfig, description="the model to train")
    train: TrainSection = Field(default_factory=TrainSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    sample: SampleSection = Field(default_factory=SampleSection)
    init: InitSection = Field(default_factory=InitSection)

    @property
    def max_steps(self) -> int | None:
        """The step limit: `train.max_steps`, else 1000 when no time budget is set either."""
        if self.train.max_steps is None and self.train.max_time is None:
            return 1000
        return self.train.max_steps

    @property
    def seq_len(self) -> int:
        """Training window: `train.seq_len`, else the GPT context, else 128 (LSTM BPTT)."""
        if self.train.seq_len is not None:
            return self.train.seq_len
        return getattr(self.model, "max_seq_len", None) or 128

    @property
    def sequential(self) -> bool:
        """Whether rows are contiguous streams whose recurrent state carries over (BPTT)."""
        if self.train.sampling == "auto":
            return self.model.kind == "lstm"
        return self.train.sampling == "sequential"

    @property
    def checkpoint_every(self) -> int:
        return self.checkpoint.every or self.eval.every

    @property
    def sample_every(self) -> int:
        return self.eval.every if self.sample.every is None else self.sample.every
