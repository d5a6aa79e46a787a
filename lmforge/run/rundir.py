"""The run dir: its layout, the lock that guards it, and reading or creating one.

Layout (see docs/training.md): `config.toml` (resolved TrainConfig), `tokenizer.json`,
`metrics.jsonl`, `tb/`, `checkpoints/step_NNNNNN/{model.safetensors, model_config.toml,
optimizer.pt, rng_rank0.json, state.json}`, `checkpoints/latest` and `checkpoints/best` (pointer
files), `plots/loss.png`, `samples.txt`, `run_info.json`, and `train.lock` while a trainer writes.
`load_run` is how eval, generate, export and finetune read a run; `create_run_dir` is how the HF
importer and fine-tuning write one that those verbs (and `init.from`) accept. A LoRA run's
checkpoints hold `adapter.safetensors` + `adapter.json` (naming the base run, its checkpoint and the
sha256 of its weights) instead of `model.safetensors`; `load_run` loads the base, then the adapter.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge import __version__
from lmforge.config import load_config, save_config
from lmforge.errors import CheckpointError, ConfigError
from lmforge.models import CONFIG_FILE as MODEL_CONFIG_FILE
from lmforge.models import MODEL_FILE, SavedModel, load_model, lora, save_model
from lmforge.run import checkpoint as ckpt
from lmforge.run.config import TrainConfig
from lmforge.run.lock import LOCK_FILE, RunLock  # noqa: F401 - part of the run-dir contract

log = logging.getLogger(__name__)

CONFIG_FILE = "config.toml"
TOKENIZER_FILE = "tokenizer.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
RUN_INFO_FILE = "run_info.json"
SAMPLES_FILE = "samples.txt"
PLOTS_DIR = "plots"
TB_DIR = "tb"
CLASSIFIER_DIR = "classifier"  # a fine-tuned classifier's head (lmforge.models.heads)
FINETUNE_CONFIG = "finetune.toml"  # the FinetuneConfig that made a fine-tuned run


@dataclass
class LoadedRun:
    """A run dir's model at one checkpoint, with everything needed to use it."""

    run_dir: Path
    model: nn.Module
    model_config: Any  # GPTConfig | LSTMConfig
    config: TrainConfig
    tokenizer: Any  # lmforge.data.tokenizer.Tokenizer
    step: int
    checkpoint_dir: Path
    adapter: dict[str, Any] | None = None  # a LoRA run's adapter.json (the model has it merged)


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / CHECKPOINTS_DIR).is_dir()


def load_run(
    run_dir: str | Path,
    checkpoint: str = "latest",
    device: torch.device | str = "cpu",
    merge: bool = True,
) -> LoadedRun:
    """The model (eval mode, on `device`), configs and tokenizer of `run_dir` at `checkpoint`.

    `checkpoint` is `latest`, `best` or `step_N`; a missing or corrupted one is a CheckpointError
    that lists what exists. A LoRA run's model is its base with the adapter merged in, or, with
    `merge=False`, with `LoRALinear` layers (frozen base, as trained).
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(
            f"{run_dir} is not a run dir (no {CONFIG_FILE}); train one with 'lmforge train' "
            "or make one with 'lmforge import'"
        )
    config = load_train_config(run_dir)
    tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    # Verify what is loaded (the weights), not what generation never reads (optimizer state).
    path, state = ckpt.resolve_checkpoint(
        run_dir / CHECKPOINTS_DIR,
        checkpoint,
        checksums=config.checkpoint.verify,
        only=(MODEL_FILE, MODEL_CONFIG_FILE, lora.ADAPTER_FILE, lora.ADAPTER_CONFIG),
    )
    step = int(state["step"])
    if (path / lora.ADAPTER_CONFIG).is_file():
        model, model_config, adapter = _load_lora(run_dir, path, device, merge)
        return LoadedRun(run_dir, model, model_config, config, tokenizer, step, path, adapter)
    model, model_config = load_model(path, device)
    return LoadedRun(run_dir, model, model_config, config, tokenizer, step, path)


def _load_lora(
    run_dir: Path, path: Path, device: torch.device | str, merge: bool
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The base run's model (checked against the recorded sha256) with this adapter on it."""
    meta = lora.read_adapter_config(path)
    base = meta.get("base") or {}
    base_dir = _find_base(run_dir, base)
    base_ckpt = base_dir / CHECKPOINTS_DIR / base["checkpoint"]
    if not base_ckpt.is_dir():
        raise CheckpointError(
            f"LoRA run {run_dir} was trained on {base_ckpt}, which no longer exists; restore "
            f"that checkpoint of the base run (or export this run merged while it exists)"
        )
    # The file itself is hashed against this state.json when the base loads, below.
    base_state = ckpt.verify_checkpoint(base_ckpt, checksums=False, only=(base["file"],))
    recorded = (base_state.get("files") or {}).get(base["file"], {}).get("sha256")
    if recorded != base["sha256"]:
        raise CheckpointError(
            f"the base of LoRA run {run_dir} changed: {base_ckpt / base['file']} has sha256 "
            f"{str(recorded)[:12]}..., the adapter was trained on {base['sha256'][:12]}...; "
            "fine-tune again from the new base, or restore the old one"
        )
    loaded = load_run(base_dir, base["checkpoint"], device)
    model = loaded.model
    lora.load_adapter(model, path)
    model = lora.merge_lora(model) if merge else model
    return model.to(device).eval(), loaded.model_config, meta


def _find_base(run_dir: Path, base: dict[str, Any]) -> Path:
    """The base run dir: its recorded absolute path, else the recorded path relative to the
    LoRA run (both moved together)."""
    if not base.get("path") or not base.get("checkpoint"):
        raise CheckpointError(f"{run_dir} is a LoRA run without a recorded base; it is corrupted")
    for candidate in (Path(base["path"]), run_dir / base.get("relative", "")):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise CheckpointError(
        f"LoRA run {run_dir} needs its base run {base['path']}, which is missing; restore it "
        "there (or beside this run as it was) to use the adapter"
    )


def base_reference(run: LoadedRun, lora_run_dir: str | Path) -> dict[str, Any]:
    """What a LoRA run made from `run` records about its base: the run dir (absolute and
    relative to the LoRA run), the checkpoint, its weights file and that file's sha256."""
    state = ckpt.verify_checkpoint(run.checkpoint_dir, checksums=False)
    files = state.get("files") or {}
    name = lora.ADAPTER_FILE if run.adapter is not None else MODEL_FILE
    if name not in files:
        raise CheckpointError(f"{run.checkpoint_dir} lists no {name}; cannot use it as a base")
    base_dir = run.run_dir.resolve()
    return {
        "path": str(base_dir),
        "relative": os.path.relpath(base_dir, Path(lora_run_dir).resolve()),
        "checkpoint": run.checkpoint_dir.name,
        "file": name,
        "sha256": files[name]["sha256"],
    }


def to_adapter_checkpoint(path: Path, spec: lora.LoRASpec, base: dict[str, Any]) -> None:
    """Rewrite a trainer checkpoint of an adapted model (`model.safetensors` with base and
    adapter tensors) to a LoRA checkpoint: the adapter files instead of the weights."""
    from safetensors.torch import load_file

    state = json.loads((path / ckpt.STATE_FILE).read_text(encoding="utf-8"))
    tensors = load_file(str(path / MODEL_FILE))
    adapter = {k: v for k, v in tensors.items() if k.endswith((".lora_A", ".lora_B"))}
    tmp = path.with_name(path.name + ".tmp")
    path.rename(tmp)
    lora.write_adapter(adapter, spec, tmp, base)
    (tmp / MODEL_FILE).unlink()
    (tmp / ckpt.STATE_FILE).unlink()
    kept = {k: v for k, v in state.items() if k not in ("format_version", "files")}
    ckpt.finish_checkpoint(tmp, kept)


def load_train_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    try:
        return load_config(TrainConfig, path)
    except ConfigError as exc:
        raise CheckpointError(f"{path} is not a valid training config: {exc}") from None


def load_tokenizer(path: str | Path) -> Any:
    from lmforge.data.tokenizer import Tokenizer

    if not Path(path).is_file():
        raise CheckpointError(f"{path} not found; a run dir needs its tokenizer.json")
    return Tokenizer.from_file(path)


def create_run_dir(
    run_dir: str | Path,
    model: nn.Module,
    model_config: Any,
    tokenizer: Any,
    config: TrainConfig | None = None,
    step: int = 0,
    overwrite: bool = False,
    info: dict[str, Any] | None = None,
    adapter: tuple[lora.LoRASpec, dict[str, Any]] | None = None,
) -> Path:
    """Write a complete run dir holding `model` as its only (and latest) checkpoint.

    For producers other than the trainer (the HF importer, fine-tuning): the result loads with
    `load_run` and works as `init.from`. `config` defaults to a TrainConfig naming the model.
    `adapter` (spec, base reference) makes it a LoRA run: only the adapter of `model` is written.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"{run_dir} already exists; choose another path or pass --overwrite")
        remove_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = config or TrainConfig(model=model_config, out=str(run_dir))
    save_config(config, run_dir / CONFIG_FILE)
    tokenizer.save(run_dir / TOKENIZER_FILE)
    write_model_checkpoint(run_dir, model, model_config, step, {"finished": True}, adapter)
    write_run_info(run_dir, device=str(next(model.parameters()).device), extra=info)
    return run_dir


def write_model_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    model_config: Any,
    step: int,
    state: dict[str, Any] | None = None,
    adapter: tuple[lora.LoRASpec, dict[str, Any]] | None = None,
) -> Path:
    """A weights-only checkpoint at `step`, made `latest` (e.g. an imported or final model);
    with `adapter` (spec, base reference), the adapter files only."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    tmp = ckpt.begin_checkpoint(root, step)
    if adapter is not None:
        lora.save_adapter(model, adapter[0], tmp, adapter[1])
        vocab_size = int(getattr(model, "_orig_mod", model).vocab_size)
        save_config(SavedModel(vocab_size=vocab_size, model=model_config), tmp / MODEL_CONFIG_FILE)
    else:
        save_model(model, model_config, tmp)
    final = ckpt.finish_checkpoint(tmp, {"step": step, **(state or {})})
    ckpt.set_pointer(root, ckpt.LATEST, final)
    return final


def remove_run_dir(run_dir: Path) -> None:
    """Delete a run dir for --overwrite, refusing anything that does not look like one."""
    if not (run_dir / CONFIG_FILE).is_file() and any(run_dir.iterdir()):
        raise ConfigError(
            f"{run_dir} exists and is not a run dir (no {CONFIG_FILE}); refusing to delete it "
            "with --overwrite; choose another out="
        )
    shutil.rmtree(run_dir)


def write_run_info(
    run_dir: str | Path,
    argv: list[str] | tuple[str, ...] | None = None,
    device: str = "cpu",
    extra: dict[str, Any] | None = None,
) -> None:
    """`run_info.json`: what produced this run (versions, git hash, command line, device)."""
    info = {
        "lmforge_version": __version__,
        "git_commit": _git_commit(),
        # The lmforge command as typed; a library call (lmforge.train.run(...)) has none, and
        # the caller's own sys.argv (pytest, a notebook) would be misleading.
        "command": list(argv) if argv else None,
        "invoked_from": "cli" if argv else "python",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "libraries": {name: _version(name) for name in ("torch", "numpy", "tokenizers")},
        **(extra or {}),
    }
    path = Path(run_dir) / RUN_INFO_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The commit of the lmforge source tree, when it is a git checkout."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None
