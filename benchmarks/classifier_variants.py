"""Fine-tuning settings of a classifier compared on the dev split, from one pretrained run.

Choosing how to fine-tune (learning rate, dropout, dtype, budget) means several `lmforge finetune`
runs of the same pretrained model scored on the task's dev split, never its test split. This runs
them: each variant is `lmforge finetune RUN task=TASK` plus `key=value` overrides (the `--base`
keys first), in its own output dir, and reports the best dev accuracy it reached, its steps and
epochs. The test accuracy each run dir also holds is left out on purpose: the chosen setting is
scored on test once, by `benchmarks/eval_tasks.py`.
Writes `benchmarks/results/classifier_variants[_TAG].json` (table `variants`).
Usage: `python benchmarks/classifier_variants.py RUN --task sst2 [--base 'classifier.max_time=150']
[--tag zen4] 'classifier.lr=1e-3' 'classifier.lr=3e-4 dropout=0.1'` (the base keys alone are
always the first variant); run `benchmarks/eval_tasks.py` first for a pretrained RUN.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import tempfile
import time
from pathlib import Path

from results_io import RESULTS, table, write_result

from lmforge.cli import main as lmforge

COLUMNS = [
    ["variant", "variant", ""],
    ["dev acc", "dev_acc", ".3f"],
    ["bag of words dev", "bow_dev_acc", ".3f"],
    ["steps", "steps", "d"],
    ["epochs", "epochs", ".2f"],
    ["seconds", "seconds", ".0f"],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the pretrained run dir to fine-tune")
    parser.add_argument("variants", nargs="*", help="each a space-separated list of key=value")
    parser.add_argument("--task", required=True, help="a classification task (sst2, trec, ...)")
    parser.add_argument("--base", default="", help="keys every variant starts from")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--tag", default="", help="suffix of the results file (e.g. the CPU)")
    args = parser.parse_intermixed_args()  # variants may follow the options
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read by lmforge's set_threads
    base = shlex.split(args.base)
    variants = [()] + [tuple(shlex.split(v)) for v in args.variants]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, overrides in enumerate(variants):
            out = Path(tmp) / f"v{i}"
            cmd = ["finetune", args.run, f"task={args.task}", f"out={out}", "device=cpu"]
            cmd += [*base, *overrides]
            print("$ lmforge " + " ".join(cmd), flush=True)
            start = time.perf_counter()
            if lmforge(cmd) != 0:
                raise SystemExit(f"failed: lmforge {' '.join(cmd)}")
            report = json.loads((out / "eval" / f"{args.task}.json").read_text(encoding="utf-8"))
            row = {
                "variant": " ".join(overrides) or "(base keys)",
                "dev_acc": report["dev_acc"],
                "bow_dev_acc": report.get("bow_dev_acc"),  # the target on dev (no sklearn: none)
                "steps": report["steps"],
                "epochs": report["epochs"],
                "seconds": time.perf_counter() - start,
            }
            print(f"{row['variant']}: dev acc {row['dev_acc']:.3f}, {row['steps']} steps")
            rows.append(row)
    name = f"classifier_variants_{args.tag}.json" if args.tag else "classifier_variants.json"
    result = {
        "benchmark": "classifier_variants",
        "run": args.run,
        "task": args.task,
        "base": base,
        "tables": {"variants": table(COLUMNS, rows)},
    }
    import torch

    path = write_result(RESULTS / name, result, torch.get_num_threads())
    print(f"written: {path}")


if __name__ == "__main__":
    main()
