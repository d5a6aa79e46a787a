"""Evaluation reports: `eval/<name>.json` and `.md` in a run dir, side-by-side tables, plots.

The JSON keeps the headline metrics as flat top-level keys (so scripts read `acc` directly) and
anything bulky (confusion matrix, per-class scores) under `details`. Tables are GitHub Markdown
with metrics as rows and runs as columns. Plots use matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Metrics = Mapping[str, float | int | str]


log = logging.getLogger(__name__)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def format_value(value: Any) -> str:
    """Numbers for a table: integers as is, fractions with 4 significant decimals."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def markdown_table(columns: Mapping[str, Metrics], title: str = "metric") -> str:
    """Metrics as rows, one column per run (keys missing from a run show as '-')."""
    keys: list[str] = []
    for metrics in columns.values():
        keys.extend(k for k in metrics if k not in keys)
    header = f"| {title} | " + " | ".join(columns) + " |"
    rule = "|" + "---|" * (len(columns) + 1)
    rows = [header, rule]
    for key in keys:
        cells = [format_value(m[key]) if key in m else "-" for m in columns.values()]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_report(
    run_dir: str | Path,
    name: str,
    metrics: Metrics,
    details: Mapping[str, Any] | None = None,
    column: str | None = None,
) -> Path:
    """Write `run_dir/eval/<name>.json` (flat headline keys) and `<name>.md`; return the json.

    `column` heads the Markdown table's value column (default: the run dir's name).
    """
    out = Path(run_dir) / "eval"
    payload: dict[str, Any] = dict(metrics)
    if details:
        payload["details"] = dict(details)
    json_path = out / f"{name}.json"
    _atomic_write(json_path, json.dumps(payload, indent=2) + "\n")
    table = markdown_table({column or Path(run_dir).name: metrics})
    _atomic_write(out / f"{name}.md", f"# {name}\n\n{table}\n")
    log.info("wrote %s and %s", json_path, json_path.with_suffix(".md").name)
    return json_path


def save_confusion_png(
    matrix: Sequence[Sequence[int]], label_names: Sequence[str], path: str | Path, title: str
) -> Path:
    """A confusion-matrix heat map with counts in the cells (rows: true, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(label_names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * n, 1.0 + 0.8 * n), dpi=100)
    try:
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(n), labels=list(label_names), rotation=45, ha="right")
        ax.set_yticks(range(n), labels=list(label_names))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        peak = max((max(row) for row in matrix), default=0)
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                color = "white" if peak and count > peak / 2 else "black"
                ax.text(j, i, str(count), ha="center", va="center", color=color)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
        fig.savefig(tmp)
        tmp.replace(path)
    finally:
        plt.close(fig)
    return path
