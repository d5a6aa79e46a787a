"""Grokking, measured against the issue's criteria: `configs/sweeps/grokking.toml` (weight decay 1)
and its control `grokking_wd0.toml` (weight decay 0), both run here through `lmforge sweep`.

Criteria (p = 97, train fraction 0.3, 1-layer d = 128, AdamW lr 1e-3, full batch): with weight
decay, test accuracy >= 95% within 20k steps, and training accuracy >= 99% at no more than a fifth
of that step; without weight decay, test accuracy < 50% at 20k steps. Accuracy is exact match of
the one answer token. Also records the step each threshold was first reached and the weight norm.
The two runs go at once, one process and `--threads` (1) each: about 0.13 s per full-batch step
on an idle core of this Xeon (the loss is on the answer token only, so the model runs its MLP and
head there only: `logits_to_keep`), about an hour for the pair at 20k steps on 2 cores;
`--steps N` runs a shorter check (criteria then reported but not meaningful). Usage:
`python benchmarks/grokking.py [--steps 20000] [--threads 1] [--out PATH]`.
Writes `benchmarks/results/grokking.json` (with `wall_seconds` and each run's `seconds`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from results_io import RESULTS, table, write_result

from lmforge.config import load_recipe, validate_config
from lmforge.lab.sweep import run_sweep
from lmforge.lab.sweep_config import SweepConfig

SWEEPS = Path(__file__).resolve().parents[1] / "configs" / "sweeps"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1, help="threads per run (2 runs at once)")
    parser.add_argument("--out", type=Path, default=RESULTS / "grokking.json")
    args = parser.parse_args()
    names = ("grokking", "grokking_wd0")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # Both sweeps at once, each in its own process (one thread each by default).
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=len(names), mp_context=spawn) as pool:
            futures = [pool.submit(_run, name, args.steps, args.threads, tmp) for name in names]
            rows = [f.result() for f in futures]
    wall = time.perf_counter() - started
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}))
    grok, control = rows
    criteria = {
        "wd1_test_acc_ge_95_within_steps": grok["step_test_95"] is not None,
        "wd1_train_99_by_a_fifth": grok["step_test_95"] is not None
        and grok["step_train_99"] is not None
        and grok["step_train_99"] <= grok["step_test_95"] / 5,
        "wd0_test_acc_below_50": control["final_test_acc"] < 0.5,
    }
    columns = [["run", "run", ""], ["weight decay", "weight_decay", "g"],
               ["train acc >= 99% at step", "step_train_99", ""],
               ["test acc >= 95% at step", "step_test_95", ""],
               ["final test acc", "final_test_acc", ".3f"],
               ["final weight norm", "final_weight_norm", ".1f"]]  # fmt: skip
    payload: dict[str, Any] = {"steps": args.steps, "wall_seconds": round(wall, 1),
                               "criteria": criteria, "runs": rows,
                               "tables": {"grokking": table(columns, rows)}}  # fmt: skip
    print(f"criteria: {criteria}")
    print(f"wrote {write_result(args.out, payload, threads=args.threads)}")


def _run(name: str, steps: int, threads: int, tmp: str) -> dict[str, Any]:
    """One config's sweep (a single point) at `steps` full-batch steps; its result row."""
    raw = load_recipe(SWEEPS / f"{name}.toml")
    pairs = round(97 * 97 * raw["ability"]["params"]["train_fraction"])
    raw["grid"]["tokens"] = [steps * pairs * 4]
    raw.update(out=str(Path(tmp) / name), workers=1, threads=threads)
    index = run_sweep(validate_config(SweepConfig, raw))
    point = index["points"][0]
    with (Path(tmp) / name / point["history_file"]).open() as f:
        history = [json.loads(x) for x in f]
    row = _row(name, raw["ability"]["weight_decay"], history)
    row["seconds"] = round(point.get("seconds") or 0.0, 1)
    return row


def _row(name: str, weight_decay: float, history: list[dict[str, Any]]) -> dict[str, Any]:
    def first(split: str, level: float) -> int | None:
        hits = [r["step"] for r in history if r[split]["exact_match"] >= level]
        return hits[0] if hits else None

    return {
        "run": name,
        "weight_decay": weight_decay,
        "step_train_99": first("train", 0.99),
        "step_test_95": first("test", 0.95),
        "final_test_acc": history[-1]["test"]["exact_match"],
        "final_train_acc": history[-1]["train"]["exact_match"],
        "final_weight_norm": history[-1]["weight_norm"],
        "curve": [
            [r["step"], r["train"]["exact_match"], r["test"]["exact_match"], r["weight_norm"]]
            for r in history
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
