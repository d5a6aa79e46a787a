"""The Trainer's interface: what it reads from a batch source and an objective, and `Components`.

The loop in `trainer.py` knows nothing about what a batch holds. A *batch source* hands out the
micro-batches of each optimizer step and can say where it is (`state_dict`, saved in every
checkpoint); an *objective* turns a batch into a loss, scores a validation source and names the
metric that picks the best checkpoint. Pretraining and SFT use `LanguageModelObjective`
(next-token cross-entropy, `val_loss`, bits per byte); the classifier fine-tuning brings its own
(`lmforge/finetune/classifier.py`). `Components` is everything a run trains with, in one object.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from lmforge.run.config import TrainConfig
from lmforge.train.distributed import DistEnv
from lmforge.train.evaluate import validation_loss
from lmforge.train.loss import cross_entropy
from lmforge.train.optim import Optimizer
from lmforge.train.state import TrainState


@runtime_checkable
class BatchSource(Protocol):
    """Where training (and validation) batches come from, deterministic and resumable by step.

    `next_batches()` returns the `accum_steps` micro-batches of one optimizer step (each of up to
    `batch_size` rows) and advances `step`. Validation rewinds a source by setting `step = 0`, so
    every evaluation reads the same batches. `rows` (rows per optimizer step over all processes)
    and `seq_len` (tokens per row, nominal) size the throughput and FLOPs figures.
    `state_dict()` is saved in each checkpoint's `state.json` (it must be JSON-able) and
    `load_state_dict()` puts a fresh source back at that position.
    """

    batch_size: int
    rows: int
    accum_steps: int
    seq_len: int
    step: int

    def next_batches(self) -> Sequence[Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Validation:
    """How to run a validation pass: `batches` steps of the source, under `amp`."""

    batches: int
    amp: contextlib.AbstractContextManager
    env: DistEnv
    recurrent: bool  # the model carries state across windows (LSTM with sequential sampling)


@runtime_checkable
class Objective(Protocol):
    """What is minimised and how a checkpoint is judged.

    `forward` runs under autocast and `loss` outside it (a low-precision loss loses the small
    probabilities); `loss` is the mean over the micro-batch. `tokens` is what a batch computed,
    pads included (throughput). `validate` returns metrics with `best_metric` among them;
    `higher_is_better` says which way is an improvement.
    """

    best_metric: str
    higher_is_better: bool

    def to_device(self, batch: Any, device: torch.device) -> Any: ...

    def forward(self, model: nn.Module, batch: Any, cache: Any = None) -> Any: ...

    def loss(self, output: Any, batch: Any) -> torch.Tensor: ...

    def tokens(self, batch: Any) -> int: ...

    def validate(
        self, model: nn.Module, source: BatchSource, how: Validation
    ) -> dict[str, float]: ...

    def describe(self, metrics: dict[str, float]) -> str: ...


class LanguageModelObjective:
    """Next-token cross-entropy on (inputs, targets) batches; `val_loss` picks the best.

    Targets equal to IGNORE_INDEX carry no loss (SFT masks prompts and padding that way). Given
    token byte lengths (`evaluate.byte_lengths(tokenizer)`), validation adds bits per byte.
    """

    best_metric = "val_loss"
    higher_is_better = False

    def __init__(self, byte_lengths: torch.Tensor | None = None) -> None:
        self.byte_lengths = byte_lengths

    def to_device(
        self, batch: tuple[torch.Tensor, torch.Tensor], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def forward(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], cache: Any = None
    ) -> torch.Tensor:
        return model(batch[0], cache=cache)

    def loss(self, output: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return cross_entropy(output, batch[1])

    def tokens(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return batch[0].numel()

    def validate(self, model: nn.Module, source: BatchSource, how: Validation) -> dict[str, float]:
        return validation_loss(
            model, source, how.batches, how.amp, how.env, how.recurrent, self.byte_lengths
        )

    def describe(self, metrics: dict[str, float]) -> str:
        text = f"val_loss {metrics['val_loss']:.4f}"
        if "val_bpb" in metrics:
            text += f"  val_bpb {metrics['val_bpb']:.4f}"
        return text


@dataclass
class Components:
    """Everything a `Trainer` trains with.

    `model` may be wrapped (DDP/FSDP/compile); the Trainer reads `config`, `max_context`,
    `flops_per_token(seq_len)` and `num_params()` from the unwrapped one, and, for recurrent
    training, `init_cache(rows, device)`. `optimizer` covers exactly the parameters that train
    and its groups carry `initial_lr` (the schedule scales it). `tokenizer` is needed for samples
    (`sample.every`) and bits per byte; `state` is a fresh `TrainState` or the one of the
    checkpoint being resumed.
    """

    config: TrainConfig
    model: nn.Module
    optimizer: Optimizer
    train_batches: BatchSource
    val_batches: BatchSource | None
    device: torch.device
    tokenizer: Any = None
    objective: Objective | None = None  # None: LanguageModelObjective with the tokenizer's bytes
    dtype: torch.dtype = torch.float32
    state: TrainState = field(default_factory=TrainState)
