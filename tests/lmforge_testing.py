"""Helpers shared by test modules (importable as `lmforge_testing`; pytest puts tests/ on the path).

Kept out of conftest.py because several conftest modules exist and `from conftest import ...`
would pick whichever one pytest imported last.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`$LMFORGE_SHARED_DATA`, else `../shared/data` beside the repo."""
    return Path(os.environ.get("LMFORGE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def require(condition: bool, reason: str) -> None:
    """Skip when something optional is missing, except under CI where it is a failure."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must not skip)")
    pytest.skip(reason)
