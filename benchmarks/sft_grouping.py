"""Does `sft.group_by_length` cost accuracy? copy_reverse from random init, grouped vs not.

A 2-layer GPT and a 1-layer LSTM (the sizes of tests/integration/test_sft_copy_reverse.py), 800 SFT
steps at batch 64, two seeds each, scored greedy on the **dev** split (the choice of a default is
model selection, so test is not looked at). One thread per run; accuracy, not speed, is measured,
so the machine need not be idle. Writes `benchmarks/results/sft_grouping.json`.
Usage: `python benchmarks/sft_grouping.py [--seeds 0 1] [--workdir /tmp/lmforge_sft_grouping]`.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
from results_io import RESULTS, table, write_result

from lmforge.data.tokenizer import build_char
from lmforge.eval.config import EvalConfig
from lmforge.eval.run import evaluate
from lmforge.eval.tasks.copy_reverse import TASK
from lmforge.finetune import finetune
from lmforge.finetune.config import FinetuneConfig
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.run.rundir import create_run_dir
from lmforge.verb import Flags

SETTINGS = {
    "gpt": (GPTConfig(n_layers=2, n_heads=4, d_model=64, max_seq_len=32), 3e-3),
    "lstm": (LSTMConfig(n_layers=1, d_model=32, d_hidden=256), 5e-3),
}
STEPS = 800


def one_run(kind: str, grouped: bool, seed: int, work: Path) -> float:
    """Dev exact match (%) of one fine-tuning from a seeded random init."""
    torch.manual_seed(seed)
    tokenizer = build_char(TASK.texts(), ["<|endoftext|>"])
    model_cfg, lr = SETTINGS[kind]
    model = build_model(model_cfg, tokenizer.vocab_size)
    init = create_run_dir(work / f"init-{kind}-{seed}", model, model_cfg, tokenizer, overwrite=True)
    out = work / f"{kind}-{'grouped' if grouped else 'plain'}-{seed}"
    sft = {"lr": lr, "batch_size": 64, "max_steps": STEPS, "eval_every": 400, "eval_batches": 2}
    sft |= {"evaluate": False, "group_by_length": grouped}
    cfg = FinetuneConfig(
        init=str(init),
        out=str(out),
        task="copy_reverse",
        device="cpu",
        threads=1,
        seed=seed,
        sft=sft,
    )
    assert finetune(cfg, Flags(overwrite=True)) == 0
    task = {"name": "copy_reverse", "split": "dev"}
    scored = evaluate(
        EvalConfig(
            runs=[str(out)], task=task, checkpoint="best", threads=1, decode={"beam_size": 1}
        )
    )
    return float(scored[str(out)]["exact_match_greedy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmforge_sft_grouping"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    rows = []
    for kind in SETTINGS:
        for grouped in (False, True):
            start = time.perf_counter()
            scores = [one_run(kind, grouped, seed, args.workdir) for seed in args.seeds]
            row = {
                "model": kind,
                "group_by_length": "on" if grouped else "off",
                "dev_exact_match": " / ".join(f"{s:.1f}" for s in scores),
                "mean": sum(scores) / len(scores),
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(row, flush=True)
            rows.append(row)
    columns = [
        ["model", "model", ""],
        ["sft.group_by_length", "group_by_length", ""],
        [f"dev exact match % (seeds {', '.join(map(str, args.seeds))})", "dev_exact_match", ""],
        ["mean", "mean", ".1f"],
    ]
    out = write_result(
        RESULTS / "sft_grouping.json",
        {
            "steps": STEPS,
            "seeds": args.seeds,
            "rows": rows,
            "tables": {"dev": table(columns, rows)},
        },
        threads=1,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
