"""Checkpoint directories on disk: atomic writes, checksums, `latest`/`best` pointers, pruning.

A checkpoint is `checkpoints/step_000500/` holding whatever files the trainer wrote (model,
optimizer, RNG states) plus `state.json`, written last, which lists every file's size and sha256.
Files are written into `step_000500.tmp/` and the directory is renamed when complete; only then is
the `latest` pointer (a one-line text file) replaced by an atomic rename. So after `kill -9` at any
moment the newest *complete* checkpoint is found, and a corrupted one is detected, never loaded.
This module knows nothing about models or optimizers; `trainer.py` decides what goes in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.errors import CheckpointError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STATE_FILE = "state.json"
LATEST = "latest"
BEST = "best"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


# ---------------------------------------------------------------------------------------------
# Writing


def begin_checkpoint(root: str | Path, step: int) -> Path:
    """A fresh, empty temp dir to write step `step`'s files into."""
    tmp = Path(root) / (checkpoint_name(step) + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def finish_checkpoint(tmp: Path, state: dict[str, Any]) -> Path:
    """Checksum every file in `tmp`, write `state.json` last, fsync, rename to the final name."""
    files = {
        str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(tmp.rglob("*"))
        if p.is_file()
    }
    full_state = {"format_version": FORMAT_VERSION, **state, "files": files}
    _write_atomic(tmp / STATE_FILE, json.dumps(full_state, indent=1))
    _fsync_dir(tmp)
    final = tmp.with_name(tmp.name.removesuffix(".tmp"))
    if final.exists():
        # Re-saving a step (a resumed run that stops at the step it resumed from): move the old
        # copy aside first, because rename cannot replace a non-empty directory.
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    _fsync_dir(final.parent)
    return final


def set_pointer(root: str | Path, name: str, checkpoint_dir: str | Path) -> None:
    """Point `root/name` (`latest` or `best`) at a checkpoint dir, by atomic rename."""
    _write_atomic(Path(root) / name, Path(checkpoint_dir).name + "\n")
    _fsync_dir(Path(root))


def read_pointer(root: str | Path, name: str) -> str | None:
    path = Path(root) / name
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def prune_checkpoints(root: str | Path, keep_last: int) -> list[str]:
    """Delete all but the newest `keep_last` step dirs, never the ones a pointer names, and any
    temp dir a killed writer left behind (call it only when no write is in progress)."""
    root = Path(root)
    for stale in [*root.glob("step_*.tmp"), *root.glob("step_*.old")]:
        shutil.rmtree(stale, ignore_errors=True)
    protected = {read_pointer(root, LATEST), read_pointer(root, BEST)}
    steps = list_checkpoints(root)
    removed = []
    for _, path in steps[: max(len(steps) - keep_last, 0)]:
        if path.name not in protected:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not all platforms can open a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Reading


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete-looking step dirs (temp dirs excluded), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def verify_checkpoint(
    path: str | Path, checksums: bool = True, only: Collection[str] | None = None
) -> dict[str, Any]:
    """`state.json` of a checkpoint after checking its listed files (all, or those in `only`:
    a reader of the weights need not hash the optimizer state); CheckpointError if not."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} has no {STATE_FILE} (incomplete checkpoint)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path / STATE_FILE} is not valid JSON (corrupted)") from None
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, this lmforge reads {FORMAT_VERSION}"
        )
    for name, info in state.get("files", {}).items():
        if only is not None and name not in only:
            continue
        file = path / name
        if not file.is_file() or file.stat().st_size != info["bytes"]:
            raise CheckpointError(f"{file} is missing or truncated (corrupted checkpoint)")
        if checksums and file_sha256(file) != info["sha256"]:
            raise CheckpointError(f"{file} fails its sha256 checksum (corrupted checkpoint)")
    return state


def resolve_checkpoint(
    root: str | Path,
    which: str = LATEST,
    checksums: bool = True,
    only: Collection[str] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Find and verify a checkpoint: `latest`, `best`, `step_N` or `N`.

    `latest` falls back, with a warning, to the newest older checkpoint that verifies, so a run
    resumes after a torn or corrupted write; an explicitly named checkpoint never falls back.
    """
    root = Path(root)
    available = [p.name for _, p in list_checkpoints(root)]
    if which == LATEST:
        return _resolve_latest(root, available, checksums, only)
    if which == BEST:
        target = read_pointer(root, BEST)
        if target is None:
            raise CheckpointError(
                f"{root} has no 'best' checkpoint (no validation ran); available: "
                f"{_listing(available)}"
            )
    else:
        target = checkpoint_name(int(which.removeprefix("step_"))) if _is_step(which) else None
        if target is None or target not in available:
            raise CheckpointError(
                f"checkpoint '{which}' not found in {root}; use latest, best or one of "
                f"{_listing(available)}"
            )
    return root / target, verify_checkpoint(root / target, checksums, only)


def _resolve_latest(
    root: Path, available: list[str], checksums: bool, only: Collection[str] | None
) -> tuple[Path, dict[str, Any]]:
    pointed = read_pointer(root, LATEST)
    order = sorted(available, reverse=True)
    if pointed in order:
        # The pointer first (it is written only after a complete checkpoint), then older ones.
        order = [pointed] + [n for n in order if n < pointed]
    for name in order:
        try:
            return root / name, verify_checkpoint(root / name, checksums, only)
        except CheckpointError as exc:
            log.warning("warning: skipping checkpoint %s: %s", name, exc)
    raise CheckpointError(f"no complete checkpoint in {root} (found: {_listing(available)})")


def _is_step(which: str) -> bool:
    return bool(re.fullmatch(r"(step_)?\d+", which))


def _listing(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


# ---------------------------------------------------------------------------------------------
# RNG states as JSON (readable without unpickling anything)


def capture_rng() -> dict[str, Any]:
    """Python, numpy (global) and torch (CPU and CUDA) RNG states as JSON-able data."""
    version, py_state, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(py_state), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *map(_plain, np_state[2:])],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
