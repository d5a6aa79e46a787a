"""Muon on FSDP2-sharded matrices (2 gloo ranks, 1 thread each) takes the step of one process.

Each rank holds row shards (DTensors) of the parameters, gradients and momentum buffers; the
step gathers the updates for Newton-Schulz and keeps its own rows. Compared on the full matrices
with our unsharded Muon (the same arithmetic, so to float rounding) and with `torch.optim.Muon`
(bf16 Newton-Schulz, so to bf16 rounding), including shapes whose rows do not split evenly.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from lmforge.train.optim import Muon

pytestmark = pytest.mark.distributed

# (rows, cols): even, uneven (7 rows -> shards of 4 and 3), tall, and two of one shape so the
# batched path (one gather for both) is exercised.
SHAPES = [(24, 40), (7, 12), (40, 24), (24, 40)]
STEPS = 3
LR, WD, MOMENTUM = 0.01, 0.1, 0.9


def matrices(seed: int = 0) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Initial weights and per-step gradients, the same on every rank."""
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(shape, generator=gen) for shape in SHAPES]
    grads = [[torch.randn(shape, generator=gen) for shape in SHAPES] for _ in range(STEPS)]
    return weights, grads


class Matrices(nn.Module):
    def __init__(self, weights: list[torch.Tensor]) -> None:
        super().__init__()
        self.weights = nn.ParameterList(nn.Parameter(w.clone()) for w in weights)


def reference_steps(weights, grads, optimizer_cls, **kw) -> tuple[list[torch.Tensor], list]:
    """Full-matrix weights (and the optimizer) after STEPS steps in one process."""
    params = [nn.Parameter(w.clone()) for w in weights]
    opt = optimizer_cls(params, lr=LR, weight_decay=WD, momentum=MOMENTUM, **kw)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params], [opt.state[p]["momentum_buffer"] for p in params]


def rank_main(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        weights, grads = matrices()
        model = fully_shard(Matrices(weights))
        params = list(model.weights)
        assert all(isinstance(p, DTensor) and p.placements == (Shard(0),) for p in params)
        assert params[1].to_local().shape[0] == (4, 3)[rank]  # the uneven split is exercised
        opt = Muon(params, lr=LR, weight_decay=WD, momentum=MOMENTUM)
        for step_grads in grads:
            for p, g in zip(params, step_grads, strict=True):
                p.grad = distribute_tensor(g, p.device_mesh, p.placements)
            opt.step()
        got = [p.full_tensor() for p in params]
        bufs = [opt.state[p]["momentum_buffer"] for p in params]
        assert all(isinstance(b, DTensor) and b.placements == (Shard(0),) for b in bufs)

        want, want_bufs = reference_steps(weights, grads, Muon)
        for g, w, b, wb in zip(got, want, bufs, want_bufs, strict=True):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-6)
            torch.testing.assert_close(b.full_tensor(), wb, rtol=0, atol=1e-6)

        torch_muon, _ = reference_steps(
            weights, grads, torch.optim.Muon, adjust_lr_fn="match_rms_adamw"
        )
        for g, w, w0 in zip(got, torch_muon, weights, strict=True):
            # torch's Newton-Schulz runs in bf16: agreement to ~2e-4 on moves of >1e-2.
            assert (g - w).abs().max() < 1e-3, (g - w).abs().max()
            assert (g - w0).abs().max() > 5e-3  # the steps were taken
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sharded_muon_equals_full_matrix_muon():
    mp.spawn(rank_main, args=(2, free_port()), nprocs=2, join=True)
