"""Sweep throughput: `workers=2` x 1 thread against `workers=1` x 2 threads, on the same grid.

Prepares a char-level data dir from the shared tinyshakespeare, then runs one `lmforge sweep`
grid (default: 4 sizes x 1 token budget, the quick profile's training settings) twice, each into
a fresh dir: 2 points at a time with one thread each, and 1 point at a time with two threads.
Reports points per hour, tokens per second summed over the jobs (all tokens trained / wall
time) and the mean of the points' own tokens/s. The final losses must agree between the two
(same seeds; only the thread count differs, so equal to float rounding, not bit for bit).
Usage: `python benchmarks/sweep.py [--tokens 3e5] [--out PATH]`; numbers only mean something
on an idle machine. Writes `benchmarks/results/sweep.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results_io import RESULTS, table, write_result

from lmforge.config import load_recipe, validate_config
from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.lab.sweep import run_sweep
from lmforge.lab.sweep_config import SweepConfig

SHARED = Path(
    os.environ.get("LMFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
QUICK = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "quick.toml"
LAYOUTS = (("2 workers x 1 thread", 2, 1), ("1 worker x 2 threads", 1, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=float, default=3e5, help="tokens per point")
    parser.add_argument("--sizes", default="2x64,3x96,4x128,5x160", help="n_layers x d_model")
    parser.add_argument("--out", type=Path, default=RESULTS / "sweep.json")
    args = parser.parse_args()
    sizes = [[int(x) for x in s.split("x")] for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = SHARED / "tinyshakespeare" / "input.txt"
        cfg = PrepareConfig(source=str(source), out=str(root / "data"), tokenizer={"kind": "char"})
        prepare(cfg)
        rows, losses = [], []
        for label, workers, threads in LAYOUTS:
            row, loss = _measure(root, label, workers, threads, sizes, args.tokens)
            rows.append(row)
            losses.append(loss)
            print(json.dumps(row))
    agree = all(abs(a - b) < 1e-3 for a, b in zip(*(x.values() for x in losses), strict=True))
    columns = [["layout", "layout", ""], ["points", "points", "d"], ["wall (s)", "wall_s", ".1f"],
               ["points/hour", "points_per_hour", ".1f"],
               ["tokens/s (sum over jobs)", "tokens_per_s_total", ",.0f"],
               ["tokens/s (mean per point)", "tokens_per_s_point", ",.0f"]]  # fmt: skip
    payload: dict[str, Any] = {
        "grid": {"sizes": sizes, "tokens": args.tokens},
        "losses_agree": agree,
        "losses": dict(zip([r["layout"] for r in rows], losses, strict=True)),
        "tables": {"throughput": table(columns, rows)},
    }
    print(f"wrote {write_result(args.out, payload, threads=2)}; losses agree: {agree}")


def _measure(
    root: Path, label: str, workers: int, threads: int, sizes: list[list[int]], tokens: float
) -> tuple[dict[str, Any], dict[str, float]]:
    raw = load_recipe(QUICK)
    raw.update(data=str(root / "data"), out=str(root / f"w{workers}t{threads}"), workers=workers,
               threads=threads, fit=False, include=[])  # fmt: skip
    raw["grid"] = {**raw["grid"], "sizes": sizes, "tokens": [tokens], "flops": None}
    config = validate_config(SweepConfig, raw)
    started = time.perf_counter()
    index = run_sweep(config)
    wall = time.perf_counter() - started
    points = [p for p in index["points"] if p["status"] == "done"]
    assert len(points) == len(index["points"]), index["status"]
    total_tokens = sum(p["D"] for p in points)
    row = {
        "layout": label,
        "workers": workers,
        "threads": threads,
        "points": len(points),
        "wall_s": wall,
        "points_per_hour": 3600 * len(points) / wall,
        "tokens_per_s_total": total_tokens / wall,
        "tokens_per_s_point": sum(p["tokens_per_s"] for p in points) / len(points),
    }
    return row, {p["name"]: p["loss"] for p in points}


if __name__ == "__main__":
    sys.exit(main())
