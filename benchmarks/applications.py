"""Machine translation (Multi30k en->de, de->en) and question answering (SQuAD v1.1) with a small
GPT and a small LSTM under a CPU time budget: BLEU/chrF and exact match/F1, greedy and beam.

Pipeline (all through `lmforge.cli.main`, so every step is a command a user can rerun): prepare a
BPE data dir from each application's training text (Multi30k train en+de; the SQuAD train-split
contexts and questions, never test), pretrain a language model on it for `--pretrain-frac` of the
budget, then SFT each task (`lmforge finetune ... task=T`) for the rest; the finetune step scores
the test split. Prints a Markdown table and writes `benchmarks/results/applications.json`.
Usage: `python benchmarks/applications.py [--quick] [--budget SECONDS] [--models gpt lstm]
[--tasks multi30k_en_de multi30k_de_en squad] [--threads N]`. `--budget` is per model and task.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from results_io import RESULTS, write_result

from lmforge.cli import main as lmforge
from lmforge.eval.config import TaskSection
from lmforge.eval.tasks import get_task
from lmforge.eval.tasks.files import dataset_dir
from lmforge.eval.tasks.multi30k import read_lines

APPS = {"multi30k_en_de": "mt", "multi30k_de_en": "mt", "squad": "qa"}

FULL = {
    "vocab": {"mt": 8000, "qa": 8000},
    "context": {"mt": 128, "qa": 384},
    # Small enough for several epochs of SFT in a 30-minute single-core budget (a 6L/384 GPT
    # managed only ~15 steps a minute).
    "gpt": ["model.kind=gpt", "model.n_layers=4", "model.d_model=256", "model.n_heads=4"]
    + ["model.dropout=0.1"],
    "lstm": ["model.kind=lstm", "model.n_layers=2", "model.d_model=256", "model.d_hidden=512"]
    + ["model.dropout=0.2"],
    "pretrain": ["train.batch_size=32", "optim.lr=1e-3", "schedule.warmup_steps=100"]
    + ["dtype=float32"],  # bf16 only pays on CPUs with native bf16
    "sft": {"gpt": ["sft.lr=1e-3"], "lstm": ["sft.lr=2e-3"]},
    "sft_batch": {"mt": 64, "qa": 32},
    # Grouping by length cut Multi30k's computed tokens per epoch by 43% (less padding).
    "sft_common": ["sft.eval_every=500", "sft.epochs=1000", "dtype=float32"]
    + ["sft.group_by_length=true"],
    "decode": ["decode.beam_size=4", "decode.batch_size=32"],
    "eval_limit": None,
    "limit_train": None,
}
QUICK = {
    "vocab": {"mt": 1000, "qa": 1000},
    "context": {"mt": 64, "qa": 128},
    "gpt": ["model.kind=gpt", "model.n_layers=1", "model.d_model=64", "model.n_heads=2"],
    "lstm": ["model.kind=lstm", "model.n_layers=1", "model.d_model=64", "model.d_hidden=64"],
    "pretrain": ["train.batch_size=8", "optim.lr=3e-3", "schedule.warmup_steps=5"],
    "sft": {"gpt": ["sft.lr=3e-3"], "lstm": ["sft.lr=3e-3"]},
    "sft_batch": {"mt": 16, "qa": 16},
    "sft_common": ["sft.eval_every=50", "sft.eval_batches=2"],
    "decode": ["decode.beam_size=2", "decode.batch_size=16", "decode.max_new_tokens=16"],
    "eval_limit": 16,
    "limit_train": 2000,
}

# --threads N, passed to every verb as its threads key (None: each verb's default, all cores).
THREADS: list[int | None] = [None]


def run(args: list[str]) -> float:
    """Run one lmforge command; return its wall time. A failure stops the benchmark."""
    print("$ lmforge " + " ".join(args), flush=True)
    start = time.perf_counter()
    code = lmforge(args)
    if code != 0:
        raise SystemExit(f"command failed with exit code {code}: lmforge {' '.join(args)}")
    return time.perf_counter() - start


def write_corpus(app: str, path: Path) -> Path:
    """The application's training text, one example per line (train split only)."""
    with path.open("w", encoding="utf-8") as out:
        if app == "mt":
            folder = dataset_dir("multi30k")
            if folder is None:
                raise SystemExit("multi30k not found; set LMFORGE_SHARED_DATA")
            for lang in ("en", "de"):
                out.writelines(line + "\n" for line in read_lines(folder / "train", lang))
        else:
            seen: set[str] = set()
            for example in get_task("squad").examples("train", TaskSection()):
                context = example.fields["context"]
                if context not in seen:
                    seen.add(context)
                    out.write(context + "\n")
                out.write(example.fields["question"] + " " + example.references[0] + "\n")
    return path


def pretrain(app: str, arch: str, plan: dict, work: Path, seconds: float) -> Path:
    data = work / f"data-{app}"
    if not (data / "meta.json").is_file():
        corpus = write_corpus(app, work / f"{app}.txt")
        vocab = plan["vocab"][app]
        run(["prepare", str(corpus), f"out={data}", f"tokenizer.vocab_size={vocab}", "--overwrite"])
    out = work / f"{app}-{arch}"
    context = plan["context"][app]
    shape = plan[arch] + ([f"model.max_seq_len={context}"] if arch == "gpt" else [])
    seq = ["train.seq_len=" + str(min(context, 128))]
    budget = [f"train.max_time={max(seconds, 1.0)}", "train.max_steps=1000000"]
    common = ["device=cpu", "seed=0", "eval.every=200", "eval.batches=5", "sample.every=0"]
    common += [f"train.threads={THREADS[0]}"] if THREADS[0] else []
    run(["train", str(out), f"data={data}", *shape, *seq, *plan["pretrain"], *common, *budget,
         "--overwrite"])  # fmt: skip
    return out


def finetune(task: str, arch: str, init: Path, plan: dict, work: Path, seconds: float) -> dict:
    out = work / f"{init.name}-{task}"
    args = ["finetune", str(init), f"task={task}", f"out={out}", "device=cpu", "seed=0"]
    args += [f"threads={THREADS[0]}"] if THREADS[0] else []
    args += [f"sft.max_time={seconds}", f"sft.batch_size={plan['sft_batch'][APPS[task]]}"]
    args += [*plan["sft_common"], *plan["sft"][arch], *plan["decode"]]
    if plan["eval_limit"]:
        args.append(f"sft.eval_limit={plan['eval_limit']}")
    if plan["limit_train"]:
        args.append(f"sft.limit_train={plan['limit_train']}")
    if arch == "gpt":
        args.append(f"sft.max_len={plan['context'][APPS[task]]}")
    elapsed = run([*args, "--overwrite"])
    metrics = json.loads((out / "eval" / f"{task}.json").read_text(encoding="utf-8"))
    return {"model": arch, "task": task, "seconds": round(elapsed, 1), "run": str(out), **metrics}


HEADLINES = {
    "mt": ("bleu_greedy", "bleu_beam", "chrf_greedy", "chrf_beam"),
    "qa": ("exact_match_greedy", "f1_greedy", "exact_match_beam", "f1_beam"),
}


def table(rows: list[dict]) -> str:
    lines = ["| model | task | metric (greedy / beam) | value | baseline | n | seconds |"]
    lines.append("|---|---|---|---|---|---|---|")
    for r in rows:
        if APPS[r["task"]] == "mt":
            pairs = [("BLEU", "bleu"), ("chrF", "chrf")]
            base = {}
        else:
            pairs = [("EM", "exact_match"), ("F1", "f1")]
            base = {k: r[f"baseline_overlap_{k}"] for _, k in pairs}
        for label, key in pairs:
            value = f"{r[key + '_greedy']:.1f} / {r.get(key + '_beam', float('nan')):.1f}"
            baseline = f"{base[key]:.1f}" if key in base else "-"
            lines.append(
                f"| {r['model']} | {r['task']} | {label} | {value} | {baseline} | "
                f"{r['examples']} | {r['seconds']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and budgets (smoke)")
    parser.add_argument("--budget", type=float, help="seconds per model and task (default 1800)")
    parser.add_argument("--pretrain-frac", type=float, default=0.1, help="of the budget")
    parser.add_argument("--models", nargs="+", default=["gpt", "lstm"], choices=["gpt", "lstm"])
    parser.add_argument("--tasks", nargs="+", default=list(APPS), choices=list(APPS))
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--workdir", default="/tmp/lmforge_applications", help="scratch dir")
    parser.add_argument("--out", type=Path, help="JSON path (default results/applications.json)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    budget = args.budget or (20.0 if args.quick else 1800.0)
    if args.threads:
        # Each verb sets its own threads from its config (default: all cores), so the limit
        # travels as a key on every command, not as this process's torch setting.
        THREADS[0] = args.threads
        torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    rows = []
    for arch in args.models:
        inits: dict[str, Path] = {}
        for task in args.tasks:
            app = APPS[task]
            if app not in inits:  # one pretrained LM per application, shared by its tasks
                inits[app] = pretrain(app, arch, plan, work, budget * args.pretrain_frac)
            sft_seconds = budget * (1 - args.pretrain_frac)
            rows.append(finetune(task, arch, inits[app], plan, work, sft_seconds))
    print(table(rows))
    result = {
        "budget_seconds_per_task": budget,
        "pretrain_frac": args.pretrain_frac,
        "quick": args.quick,
        "rows": rows,
    }
    # A smoke run's numbers mean nothing; keep them out of the results folder.
    out = args.out or (work / "applications.json" if args.quick else RESULTS / "applications.json")
    write_result(out, result, THREADS[0] or torch.get_num_threads())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
