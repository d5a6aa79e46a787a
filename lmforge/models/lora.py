"""LoRA (Hu et al. 2021): low-rank adapters on a model's own `nn.Linear` layers, as PEFT does it.

`apply_lora` swaps each targeted Linear for a `LoRALinear` holding the *same* `weight`/`bias`
Parameters (so the base's state-dict keys do not change) plus `lora_A` (r, in), Kaiming-uniform,
and `lora_B` (out, r), zero: y = x W^T + b + (alpha / r) * B A dropout(x). A fresh adapter changes
nothing; the base is frozen and only the adapters train. `merge_lora` folds the adapters into plain
Linears. On disk an adapter is `adapter.safetensors` + `adapter.json` in a checkpoint dir (the run
dir code decides where; `lmforge.run.rundir`). Reference: PEFT `tuners/lora/layer.py`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import CheckpointError, ConfigError

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
FORMAT_VERSION = 1
ALL_LINEAR = "all-linear"
DEFAULT_TARGETS = ("q_proj", "v_proj")
# Output layers never get an adapter (PEFT's `all-linear` leaves the output layer out too).
_OUTPUT_LAYERS = ("lm_head",)


@dataclass(frozen=True)
class LoRASpec:
    """What an adapter is: rank, alpha (scale = alpha / rank), dropout and the target names
    (module names' last parts, e.g. `q_proj`, or `all-linear`)."""

    rank: int
    alpha: float
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoRALinear(nn.Linear):
    """A Linear plus a low-rank update; `weight` and `bias` are the wrapped Linear's own tensors.

    Subclassing nn.Linear keeps `isinstance(m, nn.Linear)` true for code that looks for linear
    layers, and the state dict keeps `weight`/`bias` under their old names beside `lora_A`/`lora_B`.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate a new weight
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.register_parameter("bias", base.bias)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=device, dtype=dtype))
        # PEFT's init: A as nn.Linear's default (Kaiming-uniform, a=sqrt(5)), B zero, so the
        # update B A starts at exactly zero.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        # out + (alpha / r) * B A x, PEFT's function. `out + delta * scale` made two more
        # activation-sized temporaries per adapted layer, and glibc's heap (kept untrimmed while
        # training, `runtime.tune_malloc`) fragmented around them until LoRA's peak RSS passed
        # full fine-tuning's (6-layer/384 GPT, batch 32: 1.93 vs 1.74 GB). One batched GEMM adds
        # the update into `out` in place instead (1.58 GB).
        h = F.linear(self.drop(x), self.lora_A)  # (..., r)
        if out.dim() != 3:
            return out + F.linear(h, self.lora_B) * self.scale
        # Under autocast `out` and `h` are bf16 while lora_B is an fp32 parameter; an in-place
        # GEMM is not autocast, so lora_B takes the output's dtype explicitly.
        b_t = self.lora_B.t().to(out.dtype).expand(h.size(0), -1, -1)  # (B, r, out)
        # A view (F.linear with a bias, or train.linear_kernel=onednn's op) is not updated in place.
        if out._is_view():
            return torch.baddbmm(out, h, b_t, alpha=self.scale)
        return out.baddbmm_(h, b_t, alpha=self.scale)

    def merged_weight(self) -> torch.Tensor:
        """W + (alpha / r) B A: the plain Linear weight that computes the same function."""
        delta = (self.lora_B.float() @ self.lora_A.float()) * self.scale  # (out, in)
        return (self.weight.float() + delta).to(self.weight.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"


# ---------------------------------------------------------------------------------------------
# Applying, listing, merging


def linear_names(model: nn.Module) -> list[str]:
    """Names of the Linear layers an adapter may target (output layers excluded)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.split(".")[-1] not in _OUTPUT_LAYERS
    ]


def resolve_targets(model: nn.Module, targets: tuple[str, ...] | list[str]) -> list[str]:
    """Full module names matched by `targets` (last name parts, or `all-linear`).

    Raises ConfigError naming a target that matches nothing, with the names that exist.
    """
    names = linear_names(model)
    if list(targets) == [ALL_LINEAR]:
        chosen = names
    else:
        leaves = {n.split(".")[-1] for n in names}
        unknown = [t for t in targets if t not in leaves]
        if unknown:
            raise ConfigError(
                f"lora.targets={list(targets)}: {unknown[0]!r} is no linear layer of this model; "
                f"choose among {sorted(leaves) or 'none'} or lora.targets={ALL_LINEAR}"
            )
        chosen = [n for n in names if n.split(".")[-1] in targets]
    if not chosen:
        raise ConfigError(
            f"lora.targets={list(targets)} matches no linear layer of this model (an LSTM has "
            "none to adapt); fine-tune it fully (unset lora.rank)"
        )
    return chosen


def apply_lora(model: nn.Module, spec: LoRASpec, modules: list[str] | None = None) -> list[str]:
    """Freeze `model` and put a fresh adapter on each targeted Linear (in place).

    `modules` (full names) overrides `spec.targets` (an adapter read back from disk). Returns the
    adapted module names.
    """
    if spec.rank < 1:
        raise ConfigError(f"lora.rank={spec.rank} must be >= 1 (unset it for full fine-tuning)")
    names = modules if modules is not None else resolve_targets(model, spec.targets)
    model.requires_grad_(False)
    for name in names:
        parent, leaf = _parent(model, name)
        base = getattr(parent, leaf)
        if isinstance(base, LoRALinear):
            raise ConfigError(f"{name} already has an adapter; merge it first (merge_lora)")
        setattr(parent, leaf, LoRALinear(base, spec.rank, spec.alpha, spec.dropout))
    return names


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`{module}.lora_A` (r, in) and `{module}.lora_B` (out, r) for every adapted module."""
    state = {}
    for name, module in lora_modules(model).items():
        state[f"{name}.lora_A"] = module.lora_A.detach()
        state[f"{name}.lora_B"] = module.lora_B.detach()
    return state


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for m in lora_modules(model).values() for p in (m.lora_A, m.lora_B)]


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear by a plain Linear with the merged weight; unfreeze the model.

    The result has exactly the base's keys, so it saves and loads as an ordinary model.
    """
    for name, module in lora_modules(model).items():
        parent, leaf = _parent(model, name)
        plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        plain = plain.to(device=module.weight.device, dtype=module.weight.dtype)
        plain.weight.copy_(module.merged_weight())
        if module.bias is not None:
            plain.bias.copy_(module.bias)
        setattr(parent, leaf, plain)
    model.requires_grad_(True)
    return model


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    head, _, leaf = name.rpartition(".")
    return (model.get_submodule(head) if head else model), leaf


# ---------------------------------------------------------------------------------------------
# Files


def save_adapter(
    model: nn.Module, spec: LoRASpec, directory: Path, base: dict[str, Any] | None
) -> None:
    """Write the adapter of `model` into `directory` (see `write_adapter`)."""
    write_adapter(adapter_state_dict(model), spec, directory, base)


def write_adapter(
    state: dict[str, torch.Tensor], spec: LoRASpec, directory: Path, base: dict[str, Any] | None
) -> None:
    """`adapter.safetensors` (the A and B matrices, keyed `{module}.lora_A|B`) and
    `adapter.json` (spec, module names, the base it was trained on) in `directory`."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    tmp = directory / (ADAPTER_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(directory / ADAPTER_FILE)
    payload = {
        "format_version": FORMAT_VERSION,
        **asdict(spec),
        "targets": list(spec.targets),
        "modules": sorted({k.rpartition(".")[0] for k in state}),
        "base": base,
    }
    (directory / ADAPTER_CONFIG).write_text(json.dumps(payload, indent=1) + "\n", "utf-8")


def read_adapter_config(directory: Path) -> dict[str, Any]:
    path = directory / ADAPTER_CONFIG
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable adapter config ({exc})") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} is from a newer lmforge; upgrade lmforge")
    return meta


def spec_of(meta: dict[str, Any]) -> LoRASpec:
    return LoRASpec(meta["rank"], meta["alpha"], meta.get("dropout", 0.0), tuple(meta["targets"]))


def load_adapter(model: nn.Module, directory: Path) -> dict[str, Any]:
    """Put the adapter saved in `directory` on `model` (in place); returns its `adapter.json`."""
    from safetensors.torch import load_file

    meta = read_adapter_config(directory)
    apply_lora(model, spec_of(meta), modules=list(meta["modules"]))
    state = load_file(str(directory / ADAPTER_FILE))
    load_adapter_state(model, state, directory / ADAPTER_FILE)
    return meta


@torch.no_grad()
def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path | str) -> None:
    """Copy A/B matrices into the model's adapters; every adapter and every tensor must match."""
    modules = lora_modules(model)
    expected = {f"{n}.lora_{p}" for n in modules for p in "AB"}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise CheckpointError(
            f"{where} does not fit the adapted model (missing {missing[:3]}, unexpected "
            f"{extra[:3]}); was it written for this base?"
        )
    for key, tensor in state.items():
        name, _, part = key.rpartition(".")
        target = getattr(modules[name], part)
        if target.shape != tensor.shape:
            raise CheckpointError(
                f"{where}: {key} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(target.shape)}"
            )
        target.copy_(tensor)
