"""Multi-digit addition as a size x data grid, plain and reversed answer digits: which is the
smallest model reaching >= 90% exact match in each format, beside the continuous metrics.

Runs `configs/sweeps/addition_reversed.toml` and `addition_plain.toml` through `lmforge sweep`
(2 workers x 1 thread, as the recipes say) into `--sweeps DIR`. Sweeps resume, so pointing
`--sweeps` at a directory where they already ran only reads their finished points. About 19
minutes for both grids on an idle 2-core AMD Zen 4. Usage:
`python benchmarks/addition.py [--sweeps DIR] [--out PATH]`.
Writes `benchmarks/results/addition.json` (table `grid`, and `smallest` per format).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from results_io import RESULTS, table, write_result

from lmforge.config import load_recipe, validate_config
from lmforge.lab.report_sweep import EMERGED
from lmforge.lab.sweep import run_sweep
from lmforge.lab.sweep_config import SweepConfig

SWEEPS = Path(__file__).resolve().parents[1] / "configs" / "sweeps"
FORMATS = ("reversed", "plain")


def run_format(fmt: str, root: Path) -> list[dict[str, Any]]:
    """The finished points of one format's sweep (run first where they are not finished)."""
    out = root / fmt
    recipe = load_recipe(SWEEPS / f"addition_{fmt}.toml")
    run_sweep(validate_config(SweepConfig, {**recipe, "out": str(out)}))
    index = json.loads((out / "sweep.json").read_text())
    rows = []
    for point in index["points"]:
        test = point["metrics"]["test"]
        rows.append({
            "format": fmt, "point": point["name"], "n_layers": point["n_layers"],
            "d_model": point["d_model"], "N": point["N"], "examples": point["ability"]["examples"],
            "steps": point["steps"], "seconds": round(point["seconds"]),
            "exact_match": test["exact_match"], "token_accuracy": test["token_accuracy"],
            "p_to_the_L": test["predicted_exact_match"], "neg_log_p": test["neg_log_p"],
        })  # fmt: skip
    return rows


def smallest(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    reached = [r for r in rows if r["exact_match"] >= EMERGED]
    if not reached:
        return None
    first = min(reached, key=lambda r: (r["N"], r["examples"]))
    return {"point": first["point"], "N": first["N"], "examples": first["examples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=Path, default=None, help="where the sweeps run")
    parser.add_argument("--out", type=Path, default=RESULTS / "addition.json")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.sweeps or Path(tmp)
        rows = [row for fmt in FORMATS for row in run_format(fmt, root)]
    result = {
        # This call's time (only reading, when the sweeps had run) and the training time of
        # every point (each on one thread, two at a time).
        "wall_seconds": round(time.perf_counter() - started),
        "point_seconds": sum(r["seconds"] for r in rows),
        "threshold": EMERGED,
        "smallest": {fmt: smallest([r for r in rows if r["format"] == fmt]) for fmt in FORMATS},
        "tables": {
            "grid": table(
                [["format", "format", ""], ["layers x width", "shape", ""], ["N", "N", ","],
                 ["training pairs", "examples", ","], ["steps", "steps", ""], ["s", "seconds", ""],
                 ["exact match", "exact_match", ".3f"], ["token accuracy", "token_accuracy", ".3f"],
                 ["p^L", "p_to_the_L", ".3f"], ["-log p(answer)", "neg_log_p", ".3f"]],
                [{**r, "shape": f"{r['n_layers']} x {r['d_model']}"} for r in rows],
            )
        },
    }  # fmt: skip
    path = write_result(args.out, result, threads=1)
    for fmt, found in result["smallest"].items():
        print(f"{fmt}: smallest reaching {EMERGED:.0%} exact match: {found or 'none in the grid'}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
