"""SQuAD (article split), small GPT and LSTM: span head vs generative SFT vs model-free baselines.

Pipeline (every step an `lmforge` command): a BPE data dir from the text of the 36 train articles
(contexts only, never the dev/test articles), pretraining each model for `--pretrain-seconds`
(default 300; validation loss every 50 steps, and the best checkpoint is the one fine-tuned: 280k
tokens are memorised fast, and a span head fine-tuned from the last (491st) step of a 600 s
pretraining reached dev F1 8.8 in 200 steps where one from its val-best 200th step reached 10.5),
then two fine-tunings of each: the span head (`qa.head=span`, dev F1 selects; 256-token windows for
both models) for `--finetune-seconds` (default 1500: pretraining + span fine-tuning = the issue's
30-minute budget) and generative SFT (today's path) for `--generate-seconds` (default 300; 0 skips
it). Every step runs in `--dtype` (default auto: bf16 where this CPU's bf16 matmuls measured
faster). Both are scored on the 8 held-out test articles (2,464 questions) with SQuAD's official
EM/F1, beside the first-sentence and overlap baselines computed in the same run. Writes
`benchmarks/results/squad_span[_TAG].json` (table `squad`).
Usage: `python benchmarks/squad_span.py [--quick] [--pretrain-seconds S] [--models gpt,lstm]
[--span-keys 'dropout=0.1'] [--tag TAG]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import time
from pathlib import Path

import torch
from results_io import RESULTS, table, write_result

from lmforge.cli import main as lmforge
from lmforge.eval.config import TaskSection
from lmforge.eval.tasks.squad import TASK

MODELS = {
    "gpt": ["model.kind=gpt", "model.n_layers=4", "model.d_model=256", "model.n_heads=4"]
    + ["model.max_seq_len=256", "train.seq_len=256"],
    "lstm": ["model.kind=lstm", "model.n_layers=2", "model.d_model=256", "model.d_hidden=512"]
    + ["train.seq_len=128"],
}
# Span fine-tuning windows: the GPT's are its 256-token context; the LSTM's default (512 tokens)
# is halved to match, measured on dev in the tenth session: 200 span steps reached dev F1 9.1 in
# 183 s with 256-token windows against 8.3 in 344 s with 512.
SPAN_KEYS = {"gpt": [], "lstm": ["sft.max_len=256"]}
QUICK_MODELS = {
    "gpt": ["model.kind=gpt", "model.n_layers=1", "model.d_model=64", "model.n_heads=2"]
    + ["model.max_seq_len=128", "train.seq_len=128"],
    "lstm": ["model.kind=lstm", "model.n_layers=1", "model.d_model=64", "model.d_hidden=128"]
    + ["train.seq_len=64"],
}


def run(args: list[str]) -> float:
    print("$ lmforge " + " ".join(args), flush=True)
    start = time.perf_counter()
    code = lmforge(args)
    if code != 0:
        raise SystemExit(f"command failed with exit code {code}: lmforge {' '.join(args)}")
    return time.perf_counter() - start


def train_text(path: Path) -> Path:
    """The contexts of the train articles, one paragraph a line (the pretraining text)."""
    articles = TASK.articles("train", TaskSection(name="squad"))
    lines = [p["context"].replace("\n", " ") for a in articles for p in a["paragraphs"]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and budgets (smoke)")
    parser.add_argument("--pretrain-seconds", type=float, help="per model (default 300; quick 10)")
    parser.add_argument(
        "--finetune-seconds", type=float, help="span fine-tuning (default 1500; quick 10)"
    )
    parser.add_argument(
        "--generate-seconds",
        type=float,
        help="generative fine-tuning (default 300; quick 10; 0 skips it)",
    )
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")
    parser.add_argument("--limit", type=int, help="test questions scored (default: all)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", default="/tmp/lmforge_bench_squad")
    parser.add_argument("--models", default="gpt,lstm", help="comma-separated: gpt, lstm")
    parser.add_argument("--tag", help="write squad_span_TAG.json (e.g. a CPU or a partial run)")
    parser.add_argument(
        "--span-keys",
        default="",
        help="extra space-separated key=value for the span fine-tunings (e.g. 'dropout=0.1')",
    )
    args = parser.parse_args()
    pretrain_s = args.pretrain_seconds or (10.0 if args.quick else 300.0)
    finetune_s = args.finetune_seconds or (10.0 if args.quick else 1500.0)
    generate_s = args.generate_seconds
    if generate_s is None:
        generate_s = 10.0 if args.quick else 300.0
    dtype = f"dtype={args.dtype}"
    span_keys = shlex.split(args.span_keys)
    limit = args.limit or (50 if args.quick else None)
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown or not chosen:
        parser.error(f"--models {args.models!r}: choose among {', '.join(MODELS)}")
    models = {m: (QUICK_MODELS if args.quick else MODELS)[m] for m in chosen}
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    threads = f"threads={args.threads}"
    text = train_text(work / "train_articles.txt")
    vocab = "1000" if args.quick else "4000"
    data = work / "data"
    run(
        ["prepare", str(text), f"out={data}", "tokenizer.kind=bpe", f"tokenizer.vocab_size={vocab}"]
    )
    rows = []
    for arch, model in models.items():
        base = work / arch
        run(
            ["train", str(base), f"data={data}", *model, "train.batch_size=32"]
            + [f"train.max_time={pretrain_s}", "train.max_steps=10000000"]
            + [f"train.threads={args.threads}", "optim.lr=1e-3", "schedule.warmup_steps=100"]
            + ["eval.every=50", "eval.batches=4", "sample.every=0", dtype]
        )  # fmt: skip
        eval_limit = [f"sft.eval_limit={limit}"] if limit else []
        common = ["task=squad", "checkpoint=best", threads, dtype, *eval_limit]
        span = work / f"{arch}-span"
        seconds = run(
            ["finetune", str(base), f"out={span}", *common, "qa.head=span", "sft.lr=1e-3"]
            + [f"sft.max_time={finetune_s}", *SPAN_KEYS[arch], *span_keys]
            + ["sft.batch_size=32", "sft.eval_every=200"]
        )  # fmt: skip
        report = json.loads((span / "eval" / "squad_span.json").read_text())
        rows.append(_row(arch, "span head", report, seconds))
        if not generate_s:
            continue
        gen = work / f"{arch}-generate"
        seconds = run(
            ["finetune", str(base), f"out={gen}", *common, "sft.lr=1e-3", "sft.batch_size=16"]
            + [f"sft.max_time={generate_s}"]
            + ["sft.eval_every=200"]
        )  # fmt: skip
        report = json.loads((gen / "eval" / "squad.json").read_text())
        rows.append(_row(arch, "generative (SFT)", report, seconds))
    baseline = json.loads((work / f"{chosen[0]}-span" / "eval" / "squad_span.json").read_text())
    for name in ("first_sentence", "overlap"):
        rows.append(
            {
                "model": "-",
                "method": f"baseline: {name.replace('_', ' ')}",
                "exact_match": baseline[f"baseline_{name}_exact_match"],
                "f1": baseline[f"baseline_{name}_f1"],
                "examples": baseline["examples"],
                "seconds": 0.0,
            }
        )
    columns = [
        ["model", "model", ""],
        ["method", "method", ""],
        ["EM", "exact_match", ".1f"],
        ["F1", "f1", ".1f"],
        ["questions", "examples", "d"],
        ["fine-tune s", "seconds", ".0f"],
    ]
    for row in rows:
        print(row)
    suffix = ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    path = write_result(
        RESULTS / f"squad_span{suffix}.json",
        {
            "benchmark": "squad_span",
            "quick": args.quick,
            "pretrain_seconds_per_model": pretrain_s,
            "span_finetune_seconds": finetune_s,
            "generate_finetune_seconds": generate_s,
            "dtype": args.dtype,
            "models": models,
            "span_keys": {m: SPAN_KEYS[m] + span_keys for m in models},
            "rows": rows,
            "tables": {"squad": table(columns, rows)},
        },
        torch.get_num_threads(),
    )
    print(f"wrote {path}")


def _row(arch: str, method: str, report: dict, seconds: float) -> dict:
    return {
        "model": arch,
        "method": method,
        # The span report has exact_match/f1; a generation report suffixes the decoding mode.
        "exact_match": float(report.get("exact_match", report.get("exact_match_greedy", 0.0))),
        "f1": float(report.get("f1", report.get("f1_greedy", 0.0))),
        "examples": int(report["examples"]),
        "seconds": round(seconds, 1),
    }


if __name__ == "__main__":
    main()
