"""Optimizers with parameter groups: AdamW (decay / no-decay), SGD, and Muon + AdamW.

Decay applies to matrices (2-D and up: linear and embedding weights, as in nanoGPT); biases and
norm gains never decay. Muon (Jordan et al. 2024, `torch.optim.Muon`) orthogonalises the updates
of 2-D hidden matrices only; embeddings, the output head, norms and biases stay on AdamW, as the
Muon authors recommend (`Muon` below follows `torch.optim.Muon` but picks the Newton-Schulz
dtype per device). Every group records `initial_lr` so the schedule can scale it.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from lmforge.run.config import OptimSection
from lmforge.train.peak import machine_peaks

log = logging.getLogger(__name__)

_HEAD_NAMES = ("lm_head", "head", "classifier", "score")


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: matrices with weight decay, vectors (biases, norm gains) without."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return [g for g in groups if g["params"]]


def muon_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(hidden 2-D matrices for Muon, everything else for AdamW).

    Embedding tables and the output head are 2-D but are lookups / a classifier, not hidden
    transforms, so they go to AdamW; a tied head is the embedding and is seen once.
    """
    embedding_params = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    hidden, rest = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name.split(".")[-2:-1] and name.split(".")[-2] in _HEAD_NAMES
        if param.dim() == 2 and id(param) not in embedding_params and not is_head:
            hidden.append(param)
        else:
            rest.append(param)
    return hidden, rest


def build_optimizer(model: nn.Module, cfg: OptimSection, device: torch.device) -> Optimizer:
    """The optimizer `cfg.name` names, over `model`'s trainable parameters."""
    if cfg.name == "sgd":
        groups = decay_groups(model, cfg.weight_decay)
        opt: Optimizer = torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0
        )
    elif cfg.name == "adamw":
        opt = _adamw(decay_groups(model, cfg.weight_decay), cfg, device)
    else:
        opt = MuonAdamW(model, cfg, device)
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return opt


def _adamw(
    groups: list[dict[str, Any]], cfg: OptimSection, device: torch.device
) -> torch.optim.AdamW:
    # The fused kernel does the whole update in one pass (CPU and CUDA); foreach is the fallback.
    fused = cfg.fused if cfg.fused is not None else device.type in ("cuda", "cpu")
    kwargs: dict[str, Any] = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **kwargs)


class Muon(torch.optim.Optimizer):
    """Muon: momentum SGD whose update is orthogonalised by a Newton-Schulz iteration.

    Follows `torch.optim.Muon` (Keller Jordan's reference: Nesterov momentum, 5 quintic
    Newton-Schulz steps, decoupled weight decay) with the `match_rms_adamw` scale (0.2 *
    sqrt(max(rows, cols))), but runs the iteration in `ns_dtype`: torch's fixed bf16 is a
    bottleneck on CPUs without native bf16 arithmetic.

    Under FSDP2 the parameters, gradients and momentum buffers are row shards (DTensors). The
    momentum and Nesterov steps are elementwise, so each rank does them on its shard; the
    Newton-Schulz iteration needs whole matrices, so each rank all-gathers the updates of its
    matrices (one collective per shape), orthogonalises them all, and keeps the rows of its own
    shard ("Distributed Muon", Liu et al. 2025). Every rank computes the same full update, so the
    step equals the single-process one; the cost is one all-gather of the updates per step and
    the Newton-Schulz work repeated on every rank.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        lr: float,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        ns_steps: int = 5,
        ns_dtype: torch.dtype = torch.float32,
    ) -> None:
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum}
        super().__init__(params, defaults)
        self.ns_steps, self.ns_dtype = ns_steps, ns_dtype

    @torch.no_grad()
    def step(self, closure=None) -> None:  # noqa: ANN001 - torch's signature
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            # Matrices of one shape (and one sharding) are orthogonalised in one batched
            # iteration: many small matmuls are slow on CPU, and under FSDP one all-gather
            # fetches them all.
            by_shape: dict[tuple[Any, ...], list[tuple[nn.Parameter, torch.Tensor]]] = {}
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if "momentum_buffer" not in state:
                    # Like the parameter: a DTensor under FSDP, so checkpoints save it sharded.
                    state["momentum_buffer"] = torch.zeros_like(param)
                buf, grad = _local(state["momentum_buffer"]), _local(param.grad)
                buf.lerp_(grad, 1 - momentum)
                update = grad.lerp(buf, momentum)  # Nesterov
                by_shape.setdefault((param.shape, *_layout(param)), []).append((param, update))
            for (shape, *layout), items in by_shape.items():
                local = torch.stack([u for _, u in items]).to(self.ns_dtype)
                full = orthogonalize(_gather(local, shape, layout), self.ns_steps)
                ortho = _shard_of(full, layout)  # this rank's rows of each orthogonal update
                scale = 0.2 * math.sqrt(max(shape[0], shape[1]))
                for (param, _), o in zip(items, ortho, strict=True):
                    weights = _local(param)
                    weights.mul_(1 - lr * group["weight_decay"])
                    weights.add_(o.to(weights.dtype), alpha=-lr * scale)


def _dtensor_class() -> type | None:
    # Nothing can be a DTensor before torch.distributed.tensor is imported (FSDP2 imports it),
    # and a single-process run should not pay for importing it.
    module = sys.modules.get("torch.distributed.tensor")
    return module.DTensor if module is not None else None


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (the same storage: in-place ops update the DTensor), or
    `tensor` itself when it is a plain tensor."""
    dtensor = _dtensor_class()
    return tensor.to_local() if dtensor is not None and isinstance(tensor, dtensor) else tensor


def _layout(param: torch.Tensor) -> tuple[Any, ...]:
    """(device mesh, placements) of a DTensor parameter; () for a plain one."""
    dtensor = _dtensor_class()
    if dtensor is None or not isinstance(param, dtensor):
        return ()
    return (param.device_mesh, tuple(param.placements))


def _stacked_placements(placements: tuple[Any, ...]) -> list[Any]:
    """The placements of a stack of matrices laid out like one: Shard(d) becomes Shard(d + 1)."""
    from torch.distributed.tensor import Replicate, Shard

    out = []
    for placement in placements:
        # _StridedShard (tensor parallel + FSDP) subclasses Shard but is laid out differently.
        if type(placement) is Shard:
            out.append(Shard(placement.dim + 1))
        elif isinstance(placement, Replicate):
            out.append(placement)
        else:
            raise NotImplementedError(f"Muon cannot gather parameters placed as {placement}")
    return out


def _gather(local: torch.Tensor, shape: torch.Size, layout: list[Any]) -> torch.Tensor:
    """The full (k, rows, cols) stack from this rank's shards of it (collective under FSDP)."""
    if not layout:
        return local
    from torch.distributed.tensor import DTensor

    mesh, placements = layout
    full_shape = (local.size(0), *shape)
    stacked = DTensor.from_local(
        local,
        mesh,
        _stacked_placements(placements),
        run_check=False,
        shape=torch.Size(full_shape),
        stride=torch.empty(full_shape, device="meta").stride(),
    )
    return stacked.full_tensor()


def _shard_of(full: torch.Tensor, layout: list[Any]) -> torch.Tensor:
    """This rank's shards of a full (k, rows, cols) stack, sliced locally (no communication)."""
    if not layout:
        return full
    from torch.distributed.tensor import distribute_tensor

    mesh, placements = layout
    sharded = distribute_tensor(full, mesh, _stacked_placements(placements), src_data_rank=None)
    return sharded.to_local()


def orthogonalize(grad: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately U V^T of each grad = U S V^T: the quintic Newton-Schulz iteration of Muon
    (coefficients from Keller Jordan's reference, chosen for a steep slope at zero).
    grad (..., m, n) -> (..., m, n), in grad's dtype."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = grad.size(-2) > grad.size(-1)
    x = grad.mT if tall else grad  # iterate on the wide side: the Gram matrix is the smaller one
    # Frobenius norm >= spectral norm, so every singular value starts <= 1.
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.mT  # (..., m, m)
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.mT if tall else x


# bf16 Newton-Schulz only where the machine's bf16 matmuls clearly beat fp32's.
NS_BF16_MARGIN = 1.5


def newton_schulz_dtype(setting: str, device: torch.device) -> torch.dtype:
    """The dtype of Muon's Newton-Schulz iteration for `optim.muon_ns_dtype`.

    `auto`: bf16 on GPUs (as the reference implementation runs it) and on CPUs whose measured bf16
    matmul peak is at least `NS_BF16_MARGIN` x the fp32 one (native bf16: Zen 4 0.42 vs 0.21
    TFLOP/s; the shakespeare_char recipe's iteration 12 vs 20 ms a step); fp32 elsewhere, since
    emulated bf16 (AVX2-only CPUs) is ~30x slower than fp32."""
    if setting in ("float32", "bfloat16"):
        return getattr(torch, setting)
    if device.type == "cuda":
        return torch.bfloat16
    if device.type != "cpu":
        return torch.float32
    peaks = machine_peaks(torch.get_num_threads())
    bf16 = max(peaks.get("bfloat16", {}).values(), default=0.0)
    fp32 = max(peaks.get("float32", {}).values(), default=0.0)
    return torch.bfloat16 if fp32 > 0 and bf16 >= NS_BF16_MARGIN * fp32 else torch.float32


class MuonAdamW:
    """Muon on hidden matrices plus AdamW on the rest, stepped together as one optimizer.

    One object keeps the trainer, the schedule (`param_groups`) and checkpointing (`state_dict`)
    unaware of the split. Muon's updates are RMS-matched to AdamW's (Liu et al. 2025,
    "Muon is scalable"), so one learning rate and weight decay suit both groups.
    """

    def __init__(self, model: nn.Module, cfg: OptimSection, device: torch.device) -> None:
        hidden, rest = muon_split(model)
        self.optimizers: list[torch.optim.Optimizer] = []
        if hidden:
            muon = Muon(
                hidden,
                lr=cfg.muon_lr or cfg.lr,
                weight_decay=cfg.weight_decay,
                momentum=cfg.muon_momentum,
                ns_dtype=newton_schulz_dtype(cfg.muon_ns_dtype, device),
            )
            self.optimizers.append(muon)
        if rest:
            self.optimizers.append(
                _adamw(decay_groups(nn.ParameterList(rest), cfg.weight_decay), cfg, device)
            )
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]

    @torch.no_grad()
    def step(self, closure=None) -> None:  # noqa: ANN001 - torch's signature
        for opt in self.optimizers:
            opt.step()

    def __iter__(self) -> Iterator[torch.optim.Optimizer]:
        """Its optimizers. `torch.distributed.checkpoint.state_dict` takes an iterable of
        optimizers, so FSDP checkpoints save (sharded) and load MuonAdamW like one optimizer."""
        return iter(self.optimizers)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for opt, state in zip(self.optimizers, state_dict["optimizers"], strict=True):
            opt.load_state_dict(state)
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]


# What the trainer needs of an optimizer; MuonAdamW provides it without subclassing.
Optimizer = torch.optim.Optimizer | MuonAdamW
