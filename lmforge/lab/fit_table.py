"""The runs a scaling-law fit reads: a sweep dir's `sweep.json`, or a CSV / JSONL table of runs.

Turns rows into `FitPoints` (N, D, C and loss as float arrays, plus a name per run): resolves the
column names, derives D = C / (6 N) when only compute is given, flags models under 100k parameters
and refuses missing columns, non-numeric or non-positive values and too few rows with a `DataError`
that names the value and the fix. It fits nothing; `fit_approach3` and `fit_isoflop` do.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import ConfigError, DataError

SWEEP_FILE = "sweep.json"
SWEEP_FORMAT_VERSION = 1
# The sweep point status whose numbers are final; every other status is skipped by a fit.
DONE = "done"
# Which field holds N for each way of counting parameters (sweep.json keys; table defaults).
N_KIND_COLUMNS = {
    "total": "N",
    "non_embedding": "N_non_embedding",
    "non_embedding_with_head": "N_non_embedding_with_head",
}
# Models this small are known to leave the power law (Kaplan et al. 2020, Hoffmann et al. 2022).
SMALL_N = 100_000
# Approach 3 has five free parameters; with fewer runs than that + 1 the fit is not determined.
MIN_ROWS = 6


@dataclass(frozen=True)
class Columns:
    """Column names to read; None means the default (and, for D and C, "only if present")."""

    n: str | None = None
    d: str | None = None
    c: str | None = None
    loss: str = "loss"


@dataclass
class FitPoints:
    """The runs of one fit as parallel arrays; `used` records which column fed which quantity."""

    names: list[str]
    n: np.ndarray
    d: np.ndarray
    c: np.ndarray
    loss: np.ndarray
    used: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def small(self) -> np.ndarray:
        """True for the runs under `SMALL_N` parameters."""
        return self.n < SMALL_N

    def subset(self, keep: np.ndarray) -> FitPoints:
        """The runs where `keep` (a boolean mask) is True."""
        names = [name for name, k in zip(self.names, keep, strict=True) if k]
        return FitPoints(
            names, self.n[keep], self.d[keep], self.c[keep], self.loss[keep], dict(self.used)
        )

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per run, for `fit.json`."""
        return [
            {
                "name": name,
                "N": float(n),
                "D": float(d),
                "C": float(c),
                "loss": float(loss),
                "small": bool(n < SMALL_N),
            }
            for name, n, d, c, loss in zip(
                self.names, self.n, self.d, self.c, self.loss, strict=True
            )
        ]


def is_sweep_dir(path: Path) -> bool:
    return path.is_dir() and (path / SWEEP_FILE).is_file()


def default_out_dir(source: Path) -> Path:
    """The sweep dir itself, or `<stem>.fit/` beside a table."""
    if source.is_dir():
        return source
    return source.with_name(f"{source.stem}.fit")


def read_rows(source: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of a sweep dir or table, and the names of sweep points skipped as not done."""
    if source.is_dir():
        if not is_sweep_dir(source):
            raise ConfigError(
                f"source {source} is a directory without {SWEEP_FILE}; give a sweep dir "
                "(written by `lmforge sweep`) or a .csv / .jsonl table of runs"
            )
        return _read_sweep(source / SWEEP_FILE)
    if not source.is_file():
        raise ConfigError(
            f"source {source} does not exist; give a sweep dir or a .csv / .jsonl table of runs"
        )
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return _read_csv(source), []
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(source), []
    raise ConfigError(
        f"source {source} has suffix '{source.suffix}'; a table of runs must be .csv or .jsonl"
    )


def _read_sweep(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not valid JSON ({exc}); rerun the sweep to rewrite it"
        ) from None
    version = index.get("format_version") if isinstance(index, dict) else None
    if version != SWEEP_FORMAT_VERSION:
        raise DataError(
            f"{path} has format_version {version!r}; this lmforge reads version "
            f"{SWEEP_FORMAT_VERSION} (rerun the sweep with this version)"
        )
    points = index.get("points")
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise DataError(f"{path}: 'points' must be a list of objects, got {type(points).__name__}")
    done, skipped = [], []
    for i, point in enumerate(points, 1):
        if point.get("status") == DONE:
            done.append(point)
        else:
            skipped.append(str(point.get("name", f"point {i}")))
    return done, skipped


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [dict(row) for row in csv.DictReader(f)]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number} is not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number} is a {type(row).__name__}, not an object")
        rows.append(row)
    return rows


def points_from_rows(
    rows: list[dict[str, Any]], columns: Columns, n_kind: str, where: str
) -> FitPoints:
    """Read N, D, C and loss from `rows` (named by `columns`), checking every value."""
    if not rows:
        raise DataError(f"{where} has no runs to fit (a table needs a header and rows)")
    present = sorted({key for row in rows for key in row})
    n_col = columns.n or N_KIND_COLUMNS[n_kind]
    _require_column(present, n_col, "columns.n", where)
    _require_column(present, columns.loss, "columns.loss", where)
    c_col = _optional_column(present, columns.c, "C", "columns.c", where)
    d_col = _optional_column(present, columns.d, "D", "columns.d", where)
    if d_col is None and c_col is None:
        raise DataError(
            f"{where} has neither a tokens column (columns.d, default 'D') nor a compute column "
            f"(columns.c, default 'C'); columns present: {', '.join(present)}"
        )
    names = [str(row.get("name", f"row {i}")) for i, row in enumerate(rows, 1)]
    n = _numbers(rows, names, n_col, where)
    loss = _numbers(rows, names, columns.loss, where)
    d = _numbers(rows, names, d_col, where) if d_col else None
    c = _numbers(rows, names, c_col, where) if c_col else None
    used = {"n": n_col, "n_kind": n_kind, "loss": columns.loss}
    if d is None:
        d = c / (6.0 * n)  # type: ignore[operator]
        used["d"] = f"{c_col} / (6 * {n_col})"
    else:
        used["d"] = str(d_col)
    if c is None:
        c = 6.0 * n * d  # IsoFLOP groups need a compute per run; 6ND is the standard estimate.
        used["c"] = f"6 * {n_col} * {d_col}"
    else:
        used["c"] = str(c_col)
    return FitPoints(names, n, d, c, loss, used)


def _require_column(present: list[str], name: str, key: str, where: str) -> None:
    if name not in present:
        raise DataError(
            f"{where} has no column '{name}' ({key}); columns present: {', '.join(present)}; "
            f"set {key}=<one of them>"
        )


def _optional_column(
    present: list[str], name: str | None, default: str, key: str, where: str
) -> str | None:
    if name is not None:
        _require_column(present, name, key, where)
        return name
    return default if default in present else None


def _numbers(rows: list[dict[str, Any]], names: list[str], column: str, where: str) -> np.ndarray:
    values = np.empty(len(rows))
    for i, row in enumerate(rows):
        raw = row.get(column)
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise DataError(
                f"{where}: {names[i]} has {column} = {raw!r}; N, D, C and loss must be positive "
                "finite numbers (fix or remove that run)"
            )
        values[i] = value
    return values


def exclude_points(
    points: FitPoints, exclude_small: bool, exclude_highest_loss: int
) -> tuple[FitPoints, FitPoints, list[dict[str, str]]]:
    """Drop small models and/or the k highest-loss runs: (kept, dropped, why each was dropped)."""
    keep = np.ones(len(points), dtype=bool)
    reasons: dict[int, str] = {}
    if exclude_small:
        for i in np.flatnonzero(points.small):
            keep[i] = False
            reasons[int(i)] = f"under {SMALL_N} parameters (exclude_small)"
    if exclude_highest_loss > 0:
        # Besiroglu et al. 2024 drop the 5 highest-loss Chinchilla runs as outliers.
        for i in np.argsort(-points.loss, kind="stable")[:exclude_highest_loss]:
            if keep[i]:
                keep[i] = False
                reasons[int(i)] = "among the highest losses (exclude_highest_loss)"
    dropped = [{"name": points.names[i], "reason": reasons[i]} for i in sorted(reasons)]
    return points.subset(keep), points.subset(~keep), dropped


def check_enough(points: FitPoints, where: str) -> None:
    if len(points) < MIN_ROWS:
        raise DataError(
            f"{where} leaves {len(points)} runs to fit; the Approach-3 fit has 5 parameters and "
            f"needs at least {MIN_ROWS} runs (add runs, or relax exclude_small / "
            "exclude_highest_loss)"
        )
