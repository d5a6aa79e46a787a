"""LoRA adapters <-> PEFT: `lmforge export LORA_RUN OUT format=peft` and `lmforge import ADAPTER_DIR
OUT base=RUN`.

An exported adapter is `adapter_config.json` + `adapter_model.safetensors` that
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(<the base's export>), OUT)` loads.
Module names follow the exported family: Llama keeps `q_proj`...`down_proj`; GPT-2 has one fused
`c_attn` for q, k and v (a Conv1D), so their adapters are stacked there: A = [A_q; A_v] (k*r, d)
and B block-structured (3d, k*r), with rank and alpha both times k (`rank_pattern`,
`alpha_pattern`) so the scale alpha/r holds. Which of q/k/v were adapted is kept in the file's
metadata, so an import splits the stack back exactly. Needs no `peft` (tests use it for parity).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import CheckpointError, ConfigError
from lmforge.interop.hf import Family, hf_family
from lmforge.models.lora import LoRASpec, adapter_state_dict, apply_lora, load_adapter_state

log = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
_QKV = ("q_proj", "k_proj", "v_proj")
_QKV_META = "lmforge_c_attn"  # safetensors metadata: which of q/k/v the c_attn stack holds
# lmforge module (inside block i) -> GPT-2 module (inside h.i); q/k/v share c_attn.
_GPT2_MODULES = {"attn.o_proj": "attn.c_proj", "mlp.up_proj": "mlp.c_fc"}
_GPT2_MODULES |= {"mlp.down_proj": "mlp.c_proj"}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


# ---------------------------------------------------------------------------------------------
# lmforge -> PEFT


def export_peft(
    run_dir: str | Path, out: str | Path, checkpoint: str = "latest", overwrite: bool = False
) -> Path:
    """Write the adapter of the LoRA run `run_dir` as a PEFT adapter dir `out`; returns `out`."""
    from safetensors.torch import save_file

    from lmforge.run.rundir import load_run

    out = Path(out)
    _check_out(out, overwrite)
    loaded = load_run(run_dir, checkpoint=checkpoint, device="cpu", merge=False)
    if loaded.adapter is None:
        raise ConfigError(
            f"{run_dir} is not a LoRA run (no adapter in {loaded.checkpoint_dir.name}); export it "
            "with format=hf, or fine-tune it with lora.rank=8 first"
        )
    cfg = loaded.model_config
    family = hf_family(cfg)
    spec = LoRASpec(loaded.adapter["rank"], loaded.adapter["alpha"], loaded.adapter["dropout"])
    state = adapter_state_dict(loaded.model)
    tensors, modules, metadata = to_peft_state(state, family, cfg.d_model)
    qkv = len(metadata[_QKV_META].split(",")) if _QKV_META in metadata else 0
    config = peft_config(spec, family, modules, qkv)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", **metadata})
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", "utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("exported the adapter of %s as a PEFT %s adapter", run_dir, family)
    return out


def to_peft_state(
    state: dict[str, torch.Tensor], family: Family, d_model: int
) -> tuple[dict[str, torch.Tensor], set[str], dict[str, str]]:
    """lmforge adapter tensors -> (PEFT tensors, adapted HF module names, file metadata)."""
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        module, _, part = key.rpartition(".")
        by_module.setdefault(module, {})[part] = tensor
    out: dict[str, torch.Tensor] = {}
    stacks: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
    for module, ab in sorted(by_module.items()):
        layer, inner = _split_block(module)
        if family == "gpt2" and inner.removeprefix("attn.") in _QKV:
            stacks.setdefault(layer, {})[inner.removeprefix("attn.")] = ab
            continue
        hf = _hf_module(family, layer, inner)
        out[f"{PREFIX}{hf}.lora_A.weight"] = ab["lora_A"]
        out[f"{PREFIX}{hf}.lora_B.weight"] = ab["lora_B"]
    metadata: dict[str, str] = {}
    for layer, parts in sorted(stacks.items()):
        names = [p for p in _QKV if p in parts]
        metadata[_QKV_META] = ",".join(names)
        a, b = _stack_qkv(parts, names, d_model)
        out[f"{PREFIX}transformer.h.{layer}.attn.c_attn.lora_A.weight"] = a
        out[f"{PREFIX}transformer.h.{layer}.attn.c_attn.lora_B.weight"] = b
    modules = {k.removeprefix(PREFIX).rsplit(".lora_", 1)[0] for k in out}
    return {k: v.contiguous() for k, v in out.items()}, modules, metadata


def _stack_qkv(
    parts: dict[str, dict[str, torch.Tensor]], names: list[str], d: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One c_attn adapter computing the q/k/v adapters in `names`: A stacked, B block-wise."""
    r = parts[names[0]]["lora_A"].size(0)
    a = torch.cat([parts[n]["lora_A"] for n in names], dim=0)  # (k*r, d)
    b = torch.zeros(3 * d, len(names) * r, dtype=a.dtype)  # (3d, k*r): q | k | v rows
    for j, name in enumerate(names):
        slot = _QKV.index(name)
        b[slot * d : (slot + 1) * d, j * r : (j + 1) * r] = parts[name]["lora_B"]
    return a, b


def _split_block(module: str) -> tuple[int, str]:
    match = _BLOCK.match(module)
    if not match:
        raise ConfigError(f"adapter on {module}: only layers inside blocks export to PEFT")
    return int(match.group(1)), match.group(2)


def _hf_module(family: Family, layer: int, inner: str) -> str:
    if family == "llama":
        kind, _, proj = inner.partition(".")
        return f"model.layers.{layer}.{'self_attn' if kind == 'attn' else 'mlp'}.{proj}"
    if inner not in _GPT2_MODULES:
        raise ConfigError(
            f"the adapter targets {inner.split('.')[-1]} (blocks.{layer}.{inner}), which has no "
            "GPT-2 module; GPT-2 adapts c_attn (q/k/v), attn.c_proj (o), mlp.c_fc (up) and "
            "mlp.c_proj (down)"
        )
    return f"transformer.h.{layer}.{_GPT2_MODULES[inner]}"


def peft_config(spec: LoRASpec, family: Family, modules: set[str], qkv: int = 0) -> dict[str, Any]:
    """PEFT's `adapter_config.json` for a LoRA of `spec` on `modules` (HF module names); `qkv`
    is how many of q/k/v a GPT-2 `c_attn` stack holds (its rank and alpha are that many times
    the others', so its scale is the same)."""
    targets = sorted({_target_name(family, m) for m in modules})
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float | int] = {}
    if qkv > 1:
        rank_pattern["c_attn"] = qkv * spec.rank
        alpha_pattern["c_attn"] = _number(qkv * spec.alpha)
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": spec.rank,
        "lora_alpha": _number(spec.alpha),
        "lora_dropout": spec.dropout,
        "target_modules": targets,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "bias": "none",
        # GPT-2's Conv1D stores weights (in, out); PEFT must know when it merges them.
        "fan_in_fan_out": family == "gpt2",
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
        "base_model_name_or_path": None,
    }


def _target_name(family: Family, module: str) -> str:
    if family == "llama":
        return module.rsplit(".", 1)[-1]
    # GPT-2 has c_proj twice (attention and MLP): name each with its parent.
    return "c_attn" if module.endswith("c_attn") else ".".join(module.rsplit(".", 2)[-2:])


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} already exists; choose another out or pass --overwrite")
        if not (out / CONFIG_FILE).is_file() and not (out / "config.json").is_file():
            raise ConfigError(
                f"{out} exists and is no adapter or model dir; refusing to replace it with "
                "--overwrite; choose another out"
            )


# ---------------------------------------------------------------------------------------------
# PEFT -> lmforge


def import_peft(
    source: str | Path, out: str | Path, base: str | Path, overwrite: bool = False
) -> Path:
    """The PEFT LoRA adapter dir `source`, made for the export of run `base`, as a LoRA run dir
    `out` (which records `base` like a LoRA fine-tuning does); returns `out`."""
    from safetensors import safe_open

    from lmforge.run.rundir import base_reference, create_run_dir, load_run

    source, out = Path(source), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already exists; choose another path or pass --overwrite")
    config = read_peft_config(source)
    loaded = load_run(base, device="cpu")
    cfg = loaded.model_config
    family = hf_family(cfg)
    with safe_open(str(source / WEIGHTS_FILE), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    state, scales = from_peft_state(tensors, config, family, cfg.d_model, metadata)
    ranks = {v.size(0) for k, v in state.items() if k.endswith("lora_A")}
    if len(ranks) != 1 or len(set(scales.values())) != 1:
        raise CheckpointError(
            f"{source} mixes ranks {sorted(ranks)} or scales {sorted(set(scales.values()))} "
            "across modules; lmforge adapters have one rank and one alpha"
        )
    rank, scale = ranks.pop(), scales.popitem()[1]
    modules = sorted({k.rpartition(".")[0] for k in state})
    leaves = tuple(sorted({m.rsplit(".", 1)[-1] for m in modules}))
    spec = LoRASpec(rank, _number(scale * rank), float(config.get("lora_dropout") or 0.0), leaves)
    model = loaded.model
    apply_lora(model, spec, modules=modules)
    load_adapter_state(model, state, source / WEIGHTS_FILE)
    reference = base_reference(loaded, out)
    info = {"imported_from": str(source.resolve()), "peft_base": str(Path(base).resolve())}
    create_run_dir(
        out, model, cfg, loaded.tokenizer, overwrite=overwrite, info=info, adapter=(spec, reference)
    )
    log.info("imported the PEFT adapter %s (rank %d) onto %s", source, rank, base)
    return out


def is_peft_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def read_peft_config(source: Path) -> dict[str, Any]:
    """adapter_config.json, checked for what lmforge's LoRA computes (plain LoRA, no biases)."""
    path = source / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable PEFT adapter config ({exc})") from None
    if not (source / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{source} has no {WEIGHTS_FILE}; save the adapter with safetensors")
    checks = (
        ("peft_type", "LORA"),
        ("bias", "none"),
        ("use_dora", False),
        ("use_rslora", False),
        ("modules_to_save", None),
    )
    for key, wanted in checks:
        value = config.get(key, wanted)
        if value != wanted and not (key == "modules_to_save" and not value):
            raise CheckpointError(
                f"{path}: {key}={value!r} is not supported (lmforge imports plain LoRA adapters: "
                f"{key}={wanted!r})"
            )
    return config


def from_peft_state(
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    family: Family,
    d_model: int,
    metadata: dict[str, str],
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """PEFT adapter tensors -> (lmforge adapter tensors, scale per lmforge module)."""
    inverse = _inverse_modules(family)
    state: dict[str, torch.Tensor] = {}
    scales: dict[str, float] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name = key.removeprefix(PREFIX)
        match = re.match(r"^(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$", name)
        if not match:
            raise CheckpointError(f"{key} is no LoRA A/B weight; cannot import it")
        pairs.setdefault(match.group(1), {})[f"lora_{match.group(2)}"] = tensor.float()
    for hf, ab in pairs.items():
        rank = ab["lora_A"].size(0)
        scale = _alpha_of(config, hf) / _rank_of(config, hf, rank)
        if family == "gpt2" and hf.endswith("attn.c_attn"):
            layer = int(hf.split(".")[-3])
            names = metadata[_QKV_META].split(",") if _QKV_META in metadata else None
            for name, a, b in _split_qkv(ab, names, d_model):
                module = f"blocks.{layer}.attn.{name}"
                state[f"{module}.lora_A"], state[f"{module}.lora_B"] = a, b
                scales[module] = scale
            continue
        module = inverse(hf)
        state[f"{module}.lora_A"], state[f"{module}.lora_B"] = ab["lora_A"], ab["lora_B"]
        scales[module] = scale
    return state, scales


def _split_qkv(
    ab: dict[str, torch.Tensor], names: list[str] | None, d: int
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """The q/k/v adapters of a c_attn adapter. Stacked by lmforge (`names` from its metadata):
    each takes its own A rows and B block. Any other (a dense B over all of A): q, k and v each
    take all of A and their rows of B, which computes the same function."""
    a, b = ab["lora_A"], ab["lora_B"]  # (R, d), (3d, R)
    if names is None:
        return [(name, a, b[i * d : (i + 1) * d]) for i, name in enumerate(_QKV)]
    if a.size(0) % len(names):
        raise CheckpointError(f"c_attn's lora_A has {a.size(0)} rows, not a stack of {names}")
    r = a.size(0) // len(names)
    out = []
    for j, name in enumerate(names):
        rows = slice(_QKV.index(name) * d, (_QKV.index(name) + 1) * d)
        out.append((name, a[j * r : (j + 1) * r], b[rows, j * r : (j + 1) * r]))
    return out


def _inverse_modules(family: Family) -> Any:
    gpt2 = {theirs: ours for ours, theirs in _GPT2_MODULES.items()}

    def inverse(hf: str) -> str:
        if family == "llama":
            match = re.match(r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)$", hf)
            if match:
                kind = "attn" if match.group(2) == "self_attn" else "mlp"
                return f"blocks.{match.group(1)}.{kind}.{match.group(3)}"
        else:
            match = re.match(r"^transformer\.h\.(\d+)\.(\w+\.\w+)$", hf)
            if match and match.group(2) in gpt2:
                return f"blocks.{match.group(1)}.{gpt2[match.group(2)]}"
        raise CheckpointError(
            f"the adapter has weights for {hf}, which is no adaptable {family} layer of lmforge"
        )

    return inverse


def _pattern(patterns: dict[str, Any], module: str) -> Any:
    # PEFT's own rule (peft.utils.other.get_pattern_key): a key matches a module name's suffix.
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return None


def _rank_of(config: dict[str, Any], module: str, actual: int) -> int:
    rank = _pattern(config.get("rank_pattern") or {}, module) or config.get("r") or actual
    if rank != actual:
        raise CheckpointError(
            f"adapter_config.json gives {module} rank {rank}, its lora_A has {actual} rows"
        )
    return int(rank)


def _alpha_of(config: dict[str, Any], module: str) -> float:
    alpha = _pattern(config.get("alpha_pattern") or {}, module)
    return float(alpha if alpha is not None else config.get("lora_alpha", 8))
