"""LoRA vs full fine-tuning of the 6-layer/384-wide GPT: peak RSS, step time, BLEU at equal time.

Pipeline (every step an `lmforge` command): a BPE data dir from Multi30k en+de train text,
pretraining for `--pretrain-seconds`, then SFT on Multi30k en->de twice from that base with the
same wall-clock budget (`sft.max_time`): full fine-tuning and LoRA (`lora.rank`, all-linear). Each
fine-tuning runs in its own process, which reports its peak RSS (ru_maxrss); step time is the
fine-tuning's training seconds over its steps; dev BLEU is `lmforge eval ... task.split=dev` on the
first `--dev-limit` dev sentences. Writes `benchmarks/results/finetune.json` (tables: `lora`).
Usage: `python benchmarks/finetune.py [--quick] [--pretrain-seconds S] [--finetune-seconds S]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from results_io import RESULTS, table, write_result

SHARED = Path(
    os.environ.get("LMFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
MODEL = ["model.kind=gpt", "model.n_layers=6", "model.d_model=384", "model.n_heads=6"]
MODEL += ["model.max_seq_len=128"]
QUICK_MODEL = ["model.kind=gpt", "model.n_layers=2", "model.d_model=64", "model.n_heads=2"]
QUICK_MODEL += ["model.max_seq_len=128"]


def lmforge(args: list[str]) -> dict:
    """Run one lmforge command in a child process; its wall time and peak RSS (MiB)."""
    print("$ lmforge " + " ".join(args), flush=True)
    code = "import resource, sys; from lmforge.cli import main; c = main(sys.argv[1:]); "
    code += "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(c)"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, check=False
    )
    seconds = time.perf_counter() - start
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): lmforge {' '.join(args)}")
    rss = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("MAXRSS")]
    return {"seconds": seconds, "peak_rss_mib": rss[-1] / 1024 if rss else None}


def train_stats(run_dir: Path) -> dict:
    """Steps and training seconds of a finished run (its latest checkpoint's state.json)."""
    name = (run_dir / "checkpoints" / "latest").read_text().strip()
    state = json.loads((run_dir / "checkpoints" / name / "state.json").read_text())
    steps = int(state["step"])
    return {"steps": steps, "step_ms": round(1000 * float(state["elapsed_s"]) / max(steps, 1), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and budgets (smoke)")
    parser.add_argument("--pretrain-seconds", type=float, help="default 900 (quick 15)")
    parser.add_argument("--finetune-seconds", type=float, help="each; default 600 (quick 15)")
    parser.add_argument("--dev-limit", type=int, help="dev sentences scored (default 300)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (all-linear)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", default="/tmp/lmforge_bench_finetune")
    args = parser.parse_args()
    pretrain_s = args.pretrain_seconds or (15.0 if args.quick else 900.0)
    finetune_s = args.finetune_seconds or (15.0 if args.quick else 600.0)
    dev_limit = args.dev_limit or (20 if args.quick else 300)
    model = QUICK_MODEL if args.quick else MODEL
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    threads = f"threads={args.threads}"
    sources = [str(SHARED / "multi30k" / f"train.{lang}.gz") for lang in ("en", "de")]
    vocab = "2000" if args.quick else "8000"
    lmforge(["prepare", *sources, f"out={work / 'data'}", "tokenizer.kind=bpe"]
            + [f"tokenizer.vocab_size={vocab}"])  # fmt: skip
    base = work / "base"
    lmforge(
        ["train", str(base), f"data={work / 'data'}", *model, "train.batch_size=32"]
        + [f"train.max_time={pretrain_s}", "train.max_steps=10000000"]
        + [f"train.threads={args.threads}"]
        + ["optim.lr=1e-3", "schedule.warmup_steps=100", "eval.every=500", "sample.every=0"]
    )  # fmt: skip
    rows = []
    for name, extra, lr in (
        ("full", [], "3e-4"),
        (f"LoRA r={args.rank}", [f"lora.rank={args.rank}", "lora.targets=all-linear"], "2e-3"),
    ):
        out = work / name.split()[0].lower()
        ran = lmforge(
            ["finetune", str(base), "task=multi30k_en_de", f"out={out}", threads, f"sft.lr={lr}"]
            + [f"sft.max_time={finetune_s}", "sft.batch_size=32", "sft.eval_every=200"]
            + ["sft.evaluate=false", *extra]
        )  # fmt: skip
        lmforge(
            ["eval", str(out), "task=multi30k_en_de", "task.split=dev", f"limit={dev_limit}"]
            + [threads, "decode.beam_size=1"]
        )
        report = json.loads((out / "eval" / "multi30k_en_de.dev.json").read_text())
        rows.append(
            {
                "method": name,
                "peak_rss_mib": round(ran["peak_rss_mib"], 1),
                **train_stats(out),
                "dev_bleu": round(float(report["bleu_greedy"]), 2),
                "seconds": round(ran["seconds"], 1),
            }
        )  # fmt: skip
    columns = [
        ["method", "method", ""],
        ["peak RSS (MiB)", "peak_rss_mib", ".0f"],
        ["step (ms)", "step_ms", ".1f"],
        ["steps", "steps", "d"],
        ["dev BLEU", "dev_bleu", ".2f"],
    ]
    for row in rows:
        print(row)
    path = write_result(
        RESULTS / ("finetune_quick.json" if args.quick else "finetune.json"),
        {
            "benchmark": "finetune",
            "quick": args.quick,
            "model": model,
            "pretrain_seconds": pretrain_s,
            "finetune_seconds_each": finetune_s,
            "dev_limit": dev_limit,
            "rows": rows,
            "tables": {"lora": table(columns, rows)},
        },
        args.threads,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
