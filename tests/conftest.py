"""Shared fixtures: where the real data lives; under CI missing data fails, never skips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lmforge_testing import require, shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    require(path.is_dir(), f"shared data dir {path} not found (set LMFORGE_SHARED_DATA)")
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from more threads, and one thread keeps results deterministic and
    # leaves the other core free.
    torch.set_num_threads(1)
    yield
