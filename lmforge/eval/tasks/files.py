"""Where a task's files are: explicit `task.train/dev/test`, else `task.dir`, else shared data.

Built-in tasks (sst2, trec, ...) know their folder name and file names; the folder is looked up
in `$LMFORGE_SHARED_DATA`, then in `../shared/data` beside the lmforge checkout or the current
directory. Nothing is downloaded. A missing file is a DataError naming the keys that fix it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from lmforge.errors import DataError

SPLITS = ("train", "dev", "test")

Row = TypeVar("Row")


def shared_data_dirs() -> list[Path]:
    """Candidate roots of the shared datasets, most specific first."""
    env = os.environ.get("LMFORGE_SHARED_DATA")
    if env:
        return [Path(env)]
    package_repo = Path(__file__).resolve().parents[3]
    return [package_repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]


def dataset_dir(dataset: str, override: str | None = None) -> Path | None:
    """The folder of a built-in dataset (`task.dir` wins), or None when none is found."""
    if override:
        return Path(override)
    for root in shared_data_dirs():
        if (root / dataset).is_dir():
            return root / dataset
    return None


def task_file(
    task_name: str,
    split: str,
    explicit: str | None,
    folder: str | None,
    dataset: str | None,
    filename: str | None,
) -> Path:
    """One split's file: `task.<split>`, else `<task.dir or shared>/<dataset>/<filename>`."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise DataError(f"task.{split} file {path} does not exist; check the path")
        return path
    base = Path(folder) if folder else (dataset_dir(dataset) if dataset else None)
    if base is None or filename is None:
        where = f" (looked for '{dataset}' under $LMFORGE_SHARED_DATA or ../shared/data)"
        raise DataError(
            f"task '{task_name}' needs a {split} file{where if dataset else ''}; "
            f"set task.{split}=FILE or task.dir=FOLDER"
        )
    path = base / filename
    if not path.is_file():
        raise DataError(
            f"task '{task_name}': {split} file {path} does not exist; "
            f"set task.{split}=FILE or task.dir=FOLDER holding {filename}"
        )
    return path


def held_out(rows: Sequence[Row], fraction: float, dev: bool, seed: int = 0) -> list[Row]:
    """A seeded `fraction` of `rows` (at least one) as a dev split when `dev`, else the rest, in
    file order: the split a task uses when no dev file is given (train and dev never overlap)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, int(len(rows) * fraction))
    chosen = sorted(order[:n_dev]) if dev else sorted(order[n_dev:])
    return [rows[i] for i in chosen] or list(rows)
