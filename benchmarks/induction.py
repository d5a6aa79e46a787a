"""Induction heads against the lab issue's target, for two seeds: the 1-layer attention-only
model's in-context score <= 0.1 ln V, the 2-layer model's >= 0.5 ln V with some head's
prefix-matching score >= 0.5.

Runs `configs/sweeps/quick_induction.toml` with `grid.seeds=[0, 1]` through `lmforge sweep`
(2 workers x 1 thread) into `--sweeps DIR`. Sweeps resume, so pointing `--sweeps` at a
directory where it already ran only reads its finished points. About 8 minutes on an idle 2-core
AMD Zen 4. Usage: `python benchmarks/induction.py [--sweeps DIR] [--out PATH]`.
Writes `benchmarks/results/induction.json` (table `induction`, and `met`).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from results_io import RESULTS, table, write_result

from lmforge.config import load_recipe, validate_config
from lmforge.lab.sweep import run_sweep
from lmforge.lab.sweep_config import SweepConfig

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "quick_induction.toml"
SEEDS = [0, 1]


def first_formed(history: list[dict[str, Any]], level: float = 0.5) -> int | None:
    """The first evaluated step at which some head's prefix-matching score reached `level`."""
    hits = [r["step"] for r in history if max(max(h) for h in r["prefix_matching"]) >= level]
    return hits[0] if hits else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=Path, default=None, help="where the sweep runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "induction.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.sweeps or Path(tmp)
        recipe = load_recipe(RECIPE)
        recipe["grid"]["seeds"] = SEEDS
        index = run_sweep(validate_config(SweepConfig, {**recipe, "out": str(out)}))
        ln_v = math.log(recipe["ability"]["params"]["vocab"])
        rows = []
        for point in index["points"]:
            metrics = point["metrics"]
            history = [
                json.loads(x)
                for x in (out / point["history_file"]).read_text().splitlines()
                if x.strip()
            ]
            rows.append({
                "point": point["name"], "n_layers": point["n_layers"], "seed": point["seed"],
                "steps": point["steps"], "seconds": round(point["seconds"]),
                "icl_nats": metrics["icl_score"], "icl_ln_v": metrics["icl_score"] / ln_v,
                "prefix_matching": max(max(h) for h in metrics["prefix_matching"]),
                "head_formed_at": first_formed(history),
            })  # fmt: skip
    one = [r for r in rows if r["n_layers"] == 1]
    two = [r for r in rows if r["n_layers"] == 2]
    met = {
        "one_layer_le_0.1_ln_v": all(r["icl_ln_v"] <= 0.1 for r in one),
        "two_layer_ge_0.5_ln_v": all(r["icl_ln_v"] >= 0.5 for r in two),
        "two_layer_prefix_matching_ge_0.5": all(r["prefix_matching"] >= 0.5 for r in two),
    }
    result = {
        "recipe": str(RECIPE.relative_to(RECIPE.parents[2])),
        "seeds": SEEDS,
        "met": met,
        "tables": {
            "induction": table(
                [["layers", "n_layers", ""], ["seed", "seed", ""], ["steps", "steps", ""],
                 ["s", "seconds", ""], ["in-context score (nats)", "icl_nats", ".3f"],
                 ["score / ln V", "icl_ln_v", ".3f"],
                 ["best head prefix matching", "prefix_matching", ".3f"],
                 ["prefix matching >= 0.5 from step", "head_formed_at", ""]],
                rows,
            )
        },
    }  # fmt: skip
    path = write_result(args.out, result, threads=1)
    print(json.dumps(met))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
