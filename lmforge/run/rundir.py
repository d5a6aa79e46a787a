"""The run dir: its layout, the lock that guards it, and reading or creating one.

Layout (see docs/training.md): `config.toml` (resolved TrainConfig), `tokenizer.json`,
`metrics.jsonl`, `tb/`, `checkpoints/step_NNNNNN/{model.safetensors, model_config.toml,
optimizer.pt, rng_rank0.json, state.json}`, `checkpoints/latest` and `checkpoints/best` (pointer
files), `plots/loss.png`, `samples.txt`, `run_info.json`, and `train.lock` while a trainer writes.
`load_run` is how eval, generate, export and finetune read a run; `create_run_dir` is how the HF
importer and fine-tuning write one that those verbs (and `init.from`) accept.
"""

from __future__ import annotations

import json
import logging
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
from lmforge.models import MODEL_FILE, load_model, save_model
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


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / CHECKPOINTS_DIR).is_dir()


def load_run(
    run_dir: str | Path, checkpoint: str = "latest", device: torch.device | str = "cpu"
) -> LoadedRun:
    """The model (eval mode, on `device`), configs and tokenizer of `run_dir` at `checkpoint`.

    `checkpoint` is `latest`, `best` or `step_N`; a missing or corrupted one is a CheckpointError
    that lists what exists.
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
        only=(MODEL_FILE, MODEL_CONFIG_FILE),
    )
    model, model_config = load_model(path, device)
    return LoadedRun(run_dir, model, model_config, config, tokenizer, int(state["step"]), path)


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
) -> Path:
    """Write a complete run dir holding `model` as its only (and latest) checkpoint.

    For producers other than the trainer (the HF importer, fine-tuning): the result loads with
    `load_run` and works as `init.from`. `config` defaults to a TrainConfig naming the model.
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
    write_model_checkpoint(run_dir, model, model_config, step, {"finished": True})
    write_run_info(run_dir, device=str(next(model.parameters()).device), extra=info)
    return run_dir


def write_model_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    model_config: Any,
    step: int,
    state: dict[str, Any] | None = None,
) -> Path:
    """A weights-only checkpoint at `step`, made `latest` (e.g. an imported or final model)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    tmp = ckpt.begin_checkpoint(root, step)
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
