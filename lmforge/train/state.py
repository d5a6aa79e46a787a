"""Saving and restoring everything a bit-exact resume needs, single-process, DDP or FSDP.

A training checkpoint holds: `model.safetensors` + `model_config.toml` (always whole, so eval and
generate read it alike), `optimizer.pt` (or `dcp/` under FSDP, written collectively with
`torch.distributed.checkpoint`), `rng_rank{r}.json` and, for recurrent models, the carried state
`carry_rank{r}.pt` per rank, and `state.json` with the step counters, the loader position and
file checksums. `checkpoint.py` does the atomic writing; this module decides the contents.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.models import build_model, save_model
from lmforge.run import checkpoint as ckpt
from lmforge.train import distributed as dist_utils
from lmforge.train.distributed import DistEnv

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Counters of a run, saved in `state.json`."""

    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    best_val: float | None = None  # best value of the objective's `best_metric` so far
    best_step: int = 0  # the step it was reached at
    evals_since_best: int = 0  # evaluations without improvement since (for `eval.patience`)
    bad_steps: int = 0
    finished: bool = False
    stopped: str = ""  # why a finished run stopped: steps | time | patience

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class Checkpointable:
    """What a training checkpoint captures (the trainer fills it in)."""

    model: nn.Module  # possibly DDP/FSDP-wrapped
    model_config: Any
    optimizer: Any
    loader: Any
    carry: list[Any] | None  # recurrent state per micro-step (LSTMState), or None
    env: DistEnv
    parallel: str


class OptimizerWithScaler:
    """Saves and loads an optimizer together with its fp16 GradScaler (one `optimizer.pt`)."""

    def __init__(self, optimizer: Any, scaler: torch.amp.GradScaler) -> None:
        self.optimizer, self.scaler = optimizer, scaler

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])


def save_training_checkpoint(
    root: Path, parts: Checkpointable, state: TrainState, loader_state: dict[str, Any]
) -> Path | None:
    """Write a checkpoint at `state.step` (collective under DDP/FSDP); returns its dir on rank 0."""
    env = parts.env
    tmp = root / (ckpt.checkpoint_name(state.step) + ".tmp")
    if env.is_main:
        tmp = ckpt.begin_checkpoint(root, state.step)
    dist_utils.barrier(env)
    fsdp = env.enabled and parts.parallel == "fsdp"
    if fsdp:
        _save_fsdp(tmp, parts)
    elif env.is_main:
        save_model(dist_utils.unwrap(parts.model), parts.model_config, tmp)
        torch.save(parts.optimizer.state_dict(), tmp / "optimizer.pt")
    _write_rank_files(tmp, parts)
    dist_utils.barrier(env)
    final = None
    if env.is_main:
        payload = {**state.to_dict(), "loader": loader_state, "world_size": env.world_size}
        final = ckpt.finish_checkpoint(tmp, payload)
        ckpt.set_pointer(root, ckpt.LATEST, final)
    dist_utils.barrier(env)
    return final


def _write_rank_files(tmp: Path, parts: Checkpointable) -> None:
    rank = parts.env.rank
    (tmp / f"rng_rank{rank}.json").write_text(json.dumps(ckpt.capture_rng()))
    if parts.carry is not None:
        carry = {"h": [c.h.cpu() for c in parts.carry], "c": [c.c.cpu() for c in parts.carry]}
        torch.save(carry, tmp / f"carry_rank{rank}.pt")


def _save_fsdp(tmp: Path, parts: Checkpointable) -> None:
    """Sharded optimizer + model via DCP, plus a consolidated model.safetensors from rank 0."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_state_dict,
    )

    model_sd, optim_sd = get_state_dict(parts.model, parts.optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / "dcp"))
    # Gathering the full weights is collective; only rank 0 keeps them (cpu_offload).
    full = get_model_state_dict(
        parts.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if parts.env.is_main:
        plain = build_model(parts.model_config, int(parts.model.vocab_size))
        plain.load_state_dict(full)
        save_model(plain, parts.model_config, tmp)


def restore_model_weights(model: nn.Module, checkpoint_dir: Path) -> None:
    """Load `model.safetensors` into an unwrapped model (before DDP/FSDP wrapping)."""
    from safetensors.torch import load_file

    state = load_file(str(checkpoint_dir / "model.safetensors"), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {
        n for n, _ in model.named_parameters()
    }
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        from lmforge.errors import CheckpointError

        raise CheckpointError(
            f"{checkpoint_dir} does not match the model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); resume with the run's own config"
        )


def restore_training_state(
    checkpoint_dir: Path, parts: Checkpointable, device: torch.device
) -> None:
    """Optimizer, RNG and carried state from a checkpoint (model weights are loaded earlier)."""
    env = parts.env
    if env.enabled and parts.parallel == "fsdp":
        _load_fsdp_optimizer(checkpoint_dir, parts)
    else:
        optim_state = torch.load(
            checkpoint_dir / "optimizer.pt", map_location=device, weights_only=True
        )
        parts.optimizer.load_state_dict(optim_state)
    rng_file = checkpoint_dir / f"rng_rank{env.rank}.json"
    if not rng_file.is_file():
        rng_file = checkpoint_dir / "rng_rank0.json"
    ckpt.restore_rng(json.loads(rng_file.read_text()))
    carry_file = checkpoint_dir / f"carry_rank{env.rank}.pt"
    if parts.carry is not None and carry_file.is_file():
        saved = torch.load(carry_file, map_location=device, weights_only=True)
        if len(saved["h"]) == len(parts.carry):
            for state, h, c in zip(parts.carry, saved["h"], saved["c"], strict=True):
                state.h, state.c = h.to(state.h.dtype), c.to(state.c.dtype)


def _load_fsdp_optimizer(checkpoint_dir: Path, parts: Checkpointable) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(parts.model, parts.optimizer)
    target = {"model": model_sd, "optim": optim_sd}
    dcp.load(target, checkpoint_id=str(checkpoint_dir / "dcp"))
    set_state_dict(
        parts.model,
        parts.optimizer,
        model_state_dict=target["model"],
        optim_state_dict=target["optim"],
    )
