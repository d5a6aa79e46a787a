"""Writing a data dir safely: build in `<out>.partial`, rename when complete, no-op when current.

An interrupted run leaves only `<out>.partial` (with `progress.json`: the config hash, source
fingerprint, the stages done, the writing pid), which no reader opens. The next run of the same
command resumes it; a run with another config or changed sources discards it. `out` itself
appears only by rename, with `meta.json` already inside, so a data dir never looks complete when
it is not.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, DataError

log = logging.getLogger(__name__)
PROGRESS = "progress.json"


def check_existing(
    out: Path,
    config_hash: str,
    fingerprint: str,
    overwrite: bool,
    config: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The existing meta when `out` is already this exact build; None when a build is needed.

    Raises ConfigError when `out` holds a different build and `overwrite` is not set, and when it
    is not a data dir at all (never deleted, even with `overwrite`).
    """
    if not out.exists():
        return None
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        if out.is_dir() and not any(out.iterdir()):
            return None
        raise ConfigError(
            f"out={out} exists and is not an lmforge data dir (no meta.json); choose another "
            "out= or remove it"
        )
    if overwrite:
        return None  # --overwrite always rebuilds, e.g. after shards were damaged
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = {}
    same_config = meta.get("config_hash") == config_hash
    same_sources = meta.get("source_fingerprint") == fingerprint
    if same_config and same_sources:
        return meta
    what = "config" if not same_config else "source files"
    if not same_config and not same_sources:
        what = "config and source files"
    differ = _differing_keys(meta.get("config"), config) if not same_config else []
    detail = f" ({'; '.join(differ)})" if differ else ""
    raise ConfigError(
        f"data dir {out} was built with different {what}{detail}; pass --overwrite to rebuild "
        "it, or choose another out="
    )


def _differing_keys(old: Any, new: dict[str, Any] | None, limit: int = 5) -> list[str]:
    """`key: old -> new` for the settings that differ between two config dumps (first `limit`)."""
    if not isinstance(old, dict) or new is None:
        return []
    a, b = _flatten(old), _flatten(new)
    keys = [k for k in sorted(a.keys() | b.keys()) if k != "out" and a.get(k) != b.get(k)]
    shown = [f"{k}: {a.get(k, 'unset')!r} -> {b.get(k, 'unset')!r}" for k in keys[:limit]]
    return shown + ([f"{len(keys) - limit} more"] if len(keys) > limit else [])


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_not_busy(pid: int, out: Path) -> None:
    if pid > 0 and pid != os.getpid() and _pid_alive(pid):
        raise DataError(
            f"another lmforge prepare (pid {pid}) is writing {out}; wait for it or choose "
            "another out="
        )


def open_work_dir(
    out: Path, config_hash: str, fingerprint: str, fresh: bool = False
) -> tuple[Path, dict[str, Any]]:
    """`<out>.partial` and its progress: resumed when it is this build, else started empty.

    `fresh` (from --overwrite) always starts empty. Temp dirs of older lmforge versions
    (`<out>.tmp-<pid>`) are removed when their process is gone.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f"{out.name}.tmp-*"):
        pid_text = stale.name.rsplit("-", 1)[-1]
        _check_not_busy(int(pid_text) if pid_text.isdigit() else -1, out)
        log.info("removing %s left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)
    work = out.parent / f"{out.name}.partial"
    state: dict[str, Any] = {}
    if work.is_dir():
        try:
            state = json.loads((work / PROGRESS).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            state = {}
        _check_not_busy(int(state.get("pid", -1)), out)
        same = (
            state.get("config_hash") == config_hash
            and state.get("source_fingerprint") == fingerprint
        )
        if fresh or not same:
            log.info("discarding %s (a different or --overwrite build)", work)
            shutil.rmtree(work)
            state = {}
        else:
            log.info("resuming the interrupted build in %s", work)
    work.mkdir(exist_ok=True)
    if not state:
        state = {"config_hash": config_hash, "source_fingerprint": fingerprint}
    state["pid"] = os.getpid()
    save_progress(work, state)
    return work, state


def save_progress(work: Path, state: dict[str, Any]) -> None:
    """Write `progress.json` atomically: a crash leaves the old or the new one, never half."""
    tmp = work / (PROGRESS + ".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(work / PROGRESS)


def commit(tmp: Path, out: Path) -> None:
    """Move the finished build into place; an older build at `out` is replaced."""
    (tmp / PROGRESS).unlink(missing_ok=True)
    old = None
    if out.exists():
        old = out.parent / f"{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
