"""Scale-out with PyTorch's own engine: torchrun -> DDP or FSDP2, applied from outside the model.

`detect()` reads torchrun's environment only; when WORLD_SIZE is absent or 1, every function here
is a no-op and no `torch.distributed` call is made (so single-process runs never touch it).
DDP replicates the model (gloo on CPU, nccl on GPU); FSDP2 `fully_shard`s each block, then the
root, sharding parameters, gradients and optimizer state (torchtitan's recipe).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect() -> DistEnv:
    """The process's place in a torchrun job (rank 0 of 1 when not launched by torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    return DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(env: DistEnv, device: torch.device) -> torch.device:
    """Join the process group; returns this rank's device (cuda:LOCAL_RANK on GPU)."""
    if not env.enabled:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown(env: DistEnv) -> None:
    if env.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_mean(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The mean of `value` over ranks (in place), unchanged when single-process."""
    if env.enabled:
        import torch.distributed as dist

        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= env.world_size
    return value


def any_rank(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """True when `flag` is true on any rank (e.g. a signal that reached only some ranks)."""
    if not env.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj: object, env: DistEnv) -> object:
    """Rank 0's `obj` on every rank."""
    if not env.enabled:
        return obj
    import torch.distributed as dist

    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def wrap_model(model: nn.Module, env: DistEnv, parallel: str, device: torch.device) -> nn.Module:
    """DDP- or FSDP2-wrap `model` for training (returned unchanged when single-process)."""
    if not env.enabled:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # Shard each block separately so only one block's full weights exist at a time.
        for block in getattr(model, "blocks", []):
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP and torch.compile wrappers (FSDP2 modifies in place)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, env: DistEnv, parallel: str, sync: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on non-final micro-steps of an accumulation."""
    if not env.enabled or sync:
        if env.enabled and parallel == "fsdp":
            model.set_requires_gradient_sync(True)  # type: ignore[operator]
        yield
        return
    if parallel == "fsdp":
        model.set_requires_gradient_sync(False)  # type: ignore[operator]
        yield
        return
    with model.no_sync():  # type: ignore[operator]
        yield
