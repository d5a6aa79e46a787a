"""Variants of a 100-second recipe, each run as the training benchmark runs the recipe itself.

Tuning a wall-clock recipe for a new CPU kind means many `timeout -s INT 100 lmforge train` runs
scored on the data dir's val split (never a test set). This runs them: every variant is the
recipe plus `key=value` overrides, `--repeats` times each (a 2-core machine's throughput varies
run to run, and a wall-clock budget turns that into loss), interleaved so a slow spell of the
machine does not land on one variant. Inductor's graph cache is warmed first by one untimed run
of each distinct shape, so a variant is not charged a cold compile the recipe's users pay once.
Writes `benchmarks/results/recipe_variants[_TAG].json` (table `variants`: mean and spread of val
loss and steps per variant).
Usage: `python benchmarks/recipe_variants.py [--recipe configs/shakespeare_char.toml]
[--repeats 2] [--tag zen4] 'optim.muon_momentum=0.9' 'model.max_seq_len=128 train.batch_size=32'`
(the recipe as written is always the first variant).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import tempfile
from pathlib import Path

from results_io import RESULTS, table, write_result
from train import ROOT, prepare_data, run_recipe

COLUMNS = [
    ["variant", "variant", ""],
    ["runs", "runs", "d"],
    ["val loss (mean)", "val_mean", ".4f"],
    ["min", "val_min", ".4f"],
    ["max", "val_max", ".4f"],
    ["steps (mean)", "steps_mean", ".0f"],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", help="each a space-separated list of key=value")
    parser.add_argument("--recipe", default="configs/shakespeare_char.toml")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tag", default="", help="suffix of the results file (e.g. the CPU)")
    args = parser.parse_args()
    recipe = ROOT / args.recipe
    variants = [()] + [tuple(shlex.split(v)) for v in args.variants]
    runs: dict[tuple[str, ...], list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = prepare_data(args.threads, workdir)
        for i, overrides in enumerate(variants):  # warm inductor's cache for each shape
            warm = (*overrides, "train.max_time=8")
            run_recipe(f"warm{i}", recipe, data, args.threads, workdir, False, warm)
        for repeat in range(args.repeats):
            for i, overrides in enumerate(variants):
                result = run_recipe(
                    f"v{i}r{repeat}", recipe, data, args.threads, workdir, False, overrides
                )
                runs[overrides].append(result)
                loss, steps = result["val_loss"], result["steps"]
                print(f"{_label(overrides)}: val {loss:.4f}, {steps} steps", flush=True)
    rows = [_summary(overrides, results) for overrides, results in runs.items()]
    name = f"recipe_variants_{args.tag}.json" if args.tag else "recipe_variants.json"
    result = {
        "benchmark": "recipe_variants",
        "recipe": args.recipe,
        "repeats": args.repeats,
        "runs": {_label(v): r for v, r in runs.items()},
        "tables": {"variants": table(COLUMNS, rows)},
    }
    path = write_result(RESULTS / name, result, args.threads)
    for row in rows:
        print(f"{row['variant']:60s} {row['val_mean']:.4f} ({row['val_min']:.4f}-"
              f"{row['val_max']:.4f}) {row['steps_mean']:.0f} steps")  # fmt: skip
    print(f"written: {path}")


def _label(overrides: tuple[str, ...]) -> str:
    return " ".join(overrides) or "(recipe as written)"


def _summary(overrides: tuple[str, ...], results: list[dict]) -> dict:
    losses = [r["val_loss"] for r in results]
    return {
        "variant": _label(overrides),
        "runs": len(results),
        "val_mean": statistics.fmean(losses),
        "val_min": min(losses),
        "val_max": max(losses),
        "steps_mean": statistics.fmean(r["steps"] for r in results),
    }


if __name__ == "__main__":
    main()
