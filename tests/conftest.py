"""Shared fixtures: where the real data lives; under CI missing data fails, never skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    return Path(os.environ.get("LMFORGE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def require(condition: bool, reason: str) -> None:
    """Skip when something optional is missing, except under CI where it is a failure."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must not skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data_dir()
    require(path.is_dir(), f"shared data dir {path} not found (set LMFORGE_SHARED_DATA)")
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from more threads, and one thread keeps results deterministic and
    # leaves the other core free.
    torch.set_num_threads(1)
    yield
