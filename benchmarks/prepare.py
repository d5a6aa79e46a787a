"""Throughput of `lmforge prepare`'s stages, in MB/s of UTF-8 input, and peak memory.

Corpora: tinyshakespeare (one 1.1 MB document) and Multi30k en+de train (58,000 one-sentence
documents, 3.9 MB). Stages: default cleaning, all cleaning steps (incl. dedup + MinHash), BPE
training (vocab 4096), tokenisation with 1 and 2 workers, and a whole `prepare` with 1 and 2
workers. Peak RSS is the process's (and, separately, its worker children's) high-water mark.
Usage: `python benchmarks/prepare.py [--quick]`; needs an idle machine for real numbers.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from lmforge.data import encode
from lmforge.data.clean import CleanConfig, Cleaner
from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.data.shards import SplitWriter
from lmforge.data.tokenizer import EOT, train_bpe

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(
    os.environ.get("LMFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def load_corpora(quick: bool) -> dict[str, list[str]]:
    """name -> documents; --quick keeps about 100 KB of each."""
    shakespeare = (SHARED / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    sentences: list[str] = []
    for lang in ("en", "de"):
        with gzip.open(SHARED / "multi30k" / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
            sentences.extend(line.rstrip("\n") for line in f)
    if quick:
        shakespeare, sentences = shakespeare[:100_000], sentences[:1500]
    return {"tinyshakespeare": [shakespeare], "multi30k_en_de": sentences}


def megabytes(docs: list[str]) -> float:
    return sum(len(d.encode("utf-8")) for d in docs) / 1e6


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def bench_cleaning(docs: list[str], cfg: CleanConfig) -> float:
    cleaner = Cleaner(cfg)
    seconds, _ = timed(lambda: [cleaner(d) for d in docs])
    return megabytes(docs) / seconds


def bench_tokenising(docs: list[str], tokenizer, workers: int, tmp: Path) -> float:
    writers = {"train": SplitWriter(tmp, f"w{workers}", encode.np.dtype("uint16"), 10**9)}
    chunks = encode.chunk_documents(((str(i), d, "train") for i, d in enumerate(docs)), True)
    seconds, _ = timed(lambda: encode.encode_to_shards(tokenizer, chunks, writers, workers))
    writers["train"].close()
    return megabytes(docs) / seconds


def bench_prepare(docs: list[str], workers: int, tmp: Path, tag: str) -> float:
    source = tmp / f"{tag}.jsonl"
    if not source.exists():
        source.write_text("\n".join(json.dumps({"text": d}) for d in docs) + "\n")
    cfg = PrepareConfig(source=str(source), out=str(tmp / f"{tag}-w{workers}"), workers=workers)
    seconds, _ = timed(lambda: prepare(cfg))
    return seconds


def peak_rss_mb() -> dict[str, float]:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale / 1e6,
    }


def run_corpus(name: str, docs: list[str], tmp: Path) -> dict[str, float]:
    row: dict[str, float] = {"mb": megabytes(docs), "documents": len(docs)}
    row["clean_default_mb_s"] = bench_cleaning(docs, CleanConfig())
    every_step = CleanConfig(nfkc=True, whitespace=True, max_repeated_line_fraction=0.3,
                             dedup=True, near_dedup=True)  # fmt: skip
    row["clean_all_mb_s"] = bench_cleaning(docs, every_step)
    seconds, tokenizer = timed(lambda: train_bpe(docs, 4096, [EOT]))
    row["bpe_train_mb_s"] = row["mb"] / seconds
    for workers in (1, 2):
        row[f"tokenise_w{workers}_mb_s"] = bench_tokenising(docs, tokenizer, workers, tmp)
    for workers in (1, 2):
        row[f"prepare_w{workers}_s"] = bench_prepare(docs, workers, tmp, name)
    return row


def print_table(rows: dict[str, dict[str, float]]) -> None:
    keys = list(next(iter(rows.values())))
    width = max(len(k) for k in keys)
    print(f"{'':<{width}}" + "".join(f"{name:>18}" for name in rows))
    for key in keys:
        print(f"{key:<{width}}" + "".join(f"{row[key]:>18,.2f}" for row in rows.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~100 KB per corpus, for a smoke run")
    args = parser.parse_args()
    corpora = load_corpora(args.quick)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, docs in corpora.items():
            rows[name] = run_corpus(name, docs, Path(tmp))
    print_table(rows)
    peak = peak_rss_mb()
    print(f"peak RSS: {peak['self']:.0f} MB (main), {peak['children']:.0f} MB (largest worker)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "quick": args.quick,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "corpora": rows,
        "peak_rss_mb": peak,
    }
    (RESULTS / "prepare.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'prepare.json'}")


if __name__ == "__main__":
    main()
