"""Grokking, measured against the issue's criteria: `configs/sweeps/grokking.toml` (weight decay 1)
and its control `grokking_wd0.toml` (weight decay 0), both run here through `lmforge sweep`.

Criteria (p = 97, train fraction 0.3, 1-layer d = 128, AdamW lr 1e-3, full batch): with weight
decay, test accuracy >= 95% within 20k steps, and training accuracy >= 99% at no more than a fifth
of that step; without weight decay, test accuracy < 50% at 20k steps. Accuracy is exact match of
the one answer token. Also records the step each threshold was first reached and the weight norm.
Hours on 2 CPU cores at the full 20k steps; `--steps N` runs a shorter check (criteria then
reported but not meaningful). Usage: `python benchmarks/grokking.py [--steps 20000] [--out PATH]`.
Writes `benchmarks/results/grokking.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
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
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("grokking", "grokking_wd0"):
            raw = load_recipe(SWEEPS / f"{name}.toml")
            pairs = round(97 * 97 * raw["ability"]["params"]["train_fraction"])
            raw["grid"]["tokens"] = [args.steps * pairs * 4]
            raw.update(out=str(Path(tmp) / name), workers=1, threads=args.threads)
            index = run_sweep(validate_config(SweepConfig, raw))
            point = index["points"][0]
            history = [json.loads(x) for x in (Path(tmp) / name / point["history_file"]).open()]
            rows.append(_row(name, raw["ability"]["weight_decay"], history))
            print(json.dumps(rows[-1]))
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
    payload: dict[str, Any] = {"steps": args.steps, "criteria": criteria, "runs": rows,
                               "tables": {"grokking": table(columns, rows)}}  # fmt: skip
    print(f"criteria: {criteria}")
    print(f"wrote {write_result(args.out, payload, threads=args.threads)}")


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
