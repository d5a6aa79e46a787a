"""Throughput and memory of `lmforge prepare` at scale, each stage next to its reference.

Generates a corpus of `--mb` MB (default 200) from the shared data: documents of 2-8 random
paragraphs drawn (seeded) from tinyshakespeare, Multi30k en+de (8 sentences a paragraph), SST-2
and TREC, written as JSONL files of <= 64 MB. Then, in MB/s of UTF-8 text:

- raw `tokenizers` (`encode_batch` and `encode_batch_fast`, batches of 1000 documents, its own
  threads): the reference, for a BPE tokenizer.json (4096, trained here), char and byte;
- reading + default cleaning (`sources` + `Cleaner`), of the JSONL and of the same documents as
  Parquet;
- the tokenisation stage alone (`encode.encode_to_shards`, shards written), 1 and 2 workers;
- BPE training on the seeded `tokenizer.train_bytes` sample (seconds);
- a whole `lmforge prepare` with `tokenizer.kind=file` in a subprocess, 1 and 2 workers (and from
  the Parquet copy, 2 workers), with the peak RSS of its process tree (sampled every 50 ms);
- a bounded-memory run (`--memory-mb`, default 1000; 0 skips it): a fresh corpus of that size,
  prepared with BPE training, exact and near dedup, 2 workers: time and peak RSS vs 2 GiB.

The issue's targets are checked in the same run: prepare >= 50% and the tokenisation stage
>= 80% of raw encode (the faster API), char/byte >= 50 MB/s and >= 3x their raw encode.
Usage: `python benchmarks/prepare.py [--mb 200] [--memory-mb 1000] [--out PATH]`; numbers only
mean something on an idle machine. Writes `benchmarks/results/prepare.json`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from results_io import RESULTS, table, write_result

from lmforge.data import encode, sources
from lmforge.data.clean import CleanConfig, Cleaner
from lmforge.data.prepare import training_sample
from lmforge.data.shards import SplitWriter
from lmforge.data.tokenizer import (
    DEFAULT_TRAIN_BYTES,
    EOT,
    Tokenizer,
    build_byte,
    build_char,
    train_bpe,
)
from lmforge.executor import available_cores

SHARED = Path(
    os.environ.get("LMFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
FILE_MB = 64
MEMORY_BOUND_BYTES = 2 * 1024**3
WORKERS = (1, 2)


# -- corpus ---------------------------------------------------------------------------------------


def paragraphs(shared: Path) -> list[str]:
    """The paragraph pool the corpus is drawn from."""
    pool = [p for p in (shared / "tinyshakespeare" / "input.txt").read_text().split("\n\n") if p]
    for lang in ("en", "de"):
        with gzip.open(shared / "multi30k" / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        pool += [" ".join(lines[i : i + 8]) for i in range(0, len(lines), 8)]
    for name in ("sst2/train.txt", "trec/train.txt"):
        lines = [line.split(" ", 1)[-1].strip() for line in (shared / name).open(encoding="utf-8")]
        pool += [" ".join(lines[i : i + 6]) for i in range(0, len(lines), 6)]
    return pool


def make_corpus(pool: list[str], megabytes: float, out: Path, seed: int) -> tuple[Path, int]:
    """JSONL files of generated documents under `out`; returns (dir, UTF-8 text bytes)."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    target, total, index = int(megabytes * 1e6), 0, 0
    while total < target:
        with open(out / f"part-{index:04d}.jsonl", "w", encoding="utf-8") as f:
            written = 0
            while written < FILE_MB * 1e6 and total < target:
                text = "\n\n".join(rng.choices(pool, k=rng.randint(2, 8)))
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                size = len(text.encode("utf-8"))
                written, total = written + size, total + size
        index += 1
    return out, total


def to_parquet(corpus: Path, out: Path) -> Path:
    """The same documents as Parquet files (row groups of 10,000 rows), one per JSONL file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(corpus.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
        pq.write_table(
            pa.table({"text": texts}), out / f"{path.stem}.parquet", row_group_size=10_000
        )
    return out


def read_docs(corpus: Path) -> list[str]:
    docs = []
    for path in sorted(corpus.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            docs.extend(json.loads(line)["text"] for line in f)
    return docs


# -- measuring ------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def batches(docs: list[str], size: int = 1000) -> Iterator[list[str]]:
    for i in range(0, len(docs), size):
        yield docs[i : i + size]


def raw_encode(tokenizer: Tokenizer, docs: list[str], fast: bool) -> float:
    """Seconds for plain `tokenizers` to encode every document (its own thread pool)."""
    inner = tokenizer.inner
    call = inner.encode_batch_fast if fast else inner.encode_batch

    def run() -> None:
        # Each batch's encodings are dropped at once: kept, 200 MB of char encodings (ids,
        # offsets, masks per token) outgrew 24 GB of RAM and the benchmark was OOM-killed.
        for batch in batches(docs):
            call(batch, add_special_tokens=False)

    seconds, _ = timed(run)
    return seconds


def tokenise_stage(tokenizer: Tokenizer, docs: list[str], workers: int, tmp: Path) -> float:
    """Seconds of `encode_to_shards` over the documents (all train), shards written."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    writers = {"train": SplitWriter(out, "train", np.dtype("<u2"), 10**8)}
    docs_iter = ((str(i), d, "train") for i, d in enumerate(docs))
    chunks = encode.chunk_documents(docs_iter, tokenizer.chunkable)
    seconds, _ = timed(lambda: encode.encode_to_shards(tokenizer, chunks, writers, workers))
    writers["train"].close()
    shutil.rmtree(out)
    return seconds


def read_clean(corpus: Path) -> float:
    options = sources.SourceOptions()
    inputs = sources.resolve([str(corpus)], options)
    cleaner = Cleaner(CleanConfig())

    def run() -> None:
        for doc in sources.iter_documents(inputs, options, sources.ReadStats()):
            cleaner(doc.text)

    return timed(run)[0]


class PeakRss:
    """Peak summed RSS of a process and its descendants, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._proc = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self._proc, *self._proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            self._stop.wait(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_prepare(args: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS bytes) of `lmforge prepare ARGS` in a subprocess."""
    command = [sys.executable, "-m", "lmforge", "prepare", *args]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rss = PeakRss(proc.pid)
    _, err = proc.communicate()
    seconds, peak = time.perf_counter() - start, rss.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{err.decode()[-2000:]}")
    return seconds, peak


# -- the run --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200, help="corpus size in MB (default 200)")
    parser.add_argument(
        "--memory-mb", type=float, default=1000, help="bounded-memory run size; 0 skips it"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "prepare.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"corpus_mb": args.mb, "cores": available_cores()}
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        pool = paragraphs(SHARED)
        corpus, size = make_corpus(pool, args.mb, tmp / "corpus", args.seed)
        mb = size / 1e6
        docs = read_docs(corpus)
        result["corpus"] = {"mb": round(mb, 1), "documents": len(docs)}
        print(f"corpus: {mb:.0f} MB, {len(docs):,} documents in {corpus}", flush=True)

        def add(stage: str, tokenizer: str, workers: Any, seconds: float, rss: int = 0) -> None:
            row = {"stage": stage, "tokenizer": tokenizer, "workers": workers,
                   "seconds": round(seconds, 2), "mb_s": round(mb / seconds, 2),
                   "peak_rss_mb": round(rss / 1e6) if rss else None}  # fmt: skip
            rows.append(row)
            print(f"{stage:<24}{tokenizer:<6}{workers!s:>4}{row['mb_s']:>10.2f} MB/s", flush=True)

        # BPE training on the seeded sample, as prepare does (one 64K-character chunk per item).
        def sample() -> Iterator[str]:
            pieces = (p for d in docs for p in encode.split_for_encoding(d, encode.CHUNK_CHARS))
            return training_sample(pieces, size, DEFAULT_TRAIN_BYTES, seed=1337)

        seconds, bpe = timed(lambda: train_bpe(sample(), 4096, [EOT]))
        sample_mb = min(size, DEFAULT_TRAIN_BYTES) / 1e6
        result["bpe_train"] = {"seconds": round(seconds, 1), "sample_mb": round(sample_mb, 1)}
        print(f"BPE training (4096, {sample_mb:.0f} MB): {seconds:.1f} s", flush=True)
        tokenizer_json = tmp / "tokenizer.json"
        bpe.save(tokenizer_json)
        kinds = {"bpe": bpe, "char": build_char(docs, [EOT]), "byte": build_byte([EOT])}

        parquet = to_parquet(corpus, tmp / "parquet")
        add("read+clean (jsonl)", "-", 1, read_clean(corpus))
        add("read+clean (parquet)", "-", 1, read_clean(parquet))
        raw: dict[str, float] = {}
        for kind, tok in kinds.items():
            for fast in (False, True):
                seconds = raw_encode(tok, docs, fast)
                add("raw encode_batch" + ("_fast" if fast else ""), kind, "rust", seconds)
                raw[kind] = max(raw.get(kind, 0.0), mb / seconds)
            for workers in WORKERS:
                add("tokenise stage", kind, workers, tokenise_stage(tok, docs, workers, tmp))
        for workers in WORKERS:
            seconds, peak = run_prepare(
                [str(corpus), f"out={tmp / f'prep-w{workers}'}", "tokenizer.kind=file",
                 f"tokenizer.path={tokenizer_json}", f"workers={workers}"]
            )  # fmt: skip
            add("whole prepare (file)", "bpe", workers, seconds, peak)
        seconds, peak = run_prepare(
            [str(parquet), f"out={tmp / 'prep-parquet'}", "tokenizer.kind=file",
             f"tokenizer.path={tokenizer_json}", "workers=2"]
        )  # fmt: skip
        add("whole prepare (parquet)", "bpe", 2, seconds, peak)

        result["targets"] = targets(rows, raw)
        if args.memory_mb:
            shutil.rmtree(corpus)
            big, big_size = make_corpus(pool, args.memory_mb, tmp / "big", args.seed + 1)
            seconds, peak = run_prepare(
                [str(big), f"out={tmp / 'prep-big'}", "clean.dedup=true", "clean.near_dedup=true",
                 "workers=2"]
            )  # fmt: skip
            result["memory_run"] = {
                "mb": round(big_size / 1e6), "seconds": round(seconds, 1),
                "peak_rss_mb": round(peak / 1e6), "bound_mb": round(MEMORY_BOUND_BYTES / 1e6),
                "within_bound": peak <= MEMORY_BOUND_BYTES,
                "config": "bpe 4096 (train_bytes default), dedup + near_dedup, 2 workers",
            }  # fmt: skip
            print(f"memory run: {result['memory_run']}")

    result["stages"] = rows
    result["tables"] = {
        "stages": table(
            [["stage", "stage", ""], ["tokenizer", "tokenizer", ""], ["workers", "workers", ""],
             ["MB/s", "mb_s", ".1f"], ["peak RSS MB", "peak_rss_mb", ""]],
            rows,
        ),
        "targets": table(
            [["target", "target", ""], ["measured", "measured", ".2f"],
             ["required", "required", ""], ["met", "met", ""]],
            result["targets"],
        ),
    }  # fmt: skip
    print_targets(result["targets"])
    out = write_result(args.out, result, threads=available_cores())
    print(f"wrote {out}")


def targets(rows: list[dict[str, Any]], raw: dict[str, float]) -> list[dict[str, Any]]:
    """The issue's four speed targets, each against the reference measured in this run."""

    def best(stage: str, kind: str) -> float:
        return max(r["mb_s"] for r in rows if r["stage"] == stage and r["tokenizer"] == kind)

    found = [
        ("whole prepare / raw encode (bpe)", best("whole prepare (file)", "bpe") / raw["bpe"],
         ">= 0.5"),
        ("tokenise stage / raw encode (bpe)", best("tokenise stage", "bpe") / raw["bpe"], ">= 0.8"),
    ]  # fmt: skip
    for kind in ("char", "byte"):
        found.append((f"{kind} tokenise MB/s", best("tokenise stage", kind), ">= 50"))
        found.append((f"{kind} tokenise / raw encode", best("tokenise stage", kind) / raw[kind],
                      ">= 3"))  # fmt: skip
    return [
        {"target": name, "measured": round(value, 2), "required": need,
         "met": value >= float(need.split()[-1])}
        for name, value, need in found
    ]  # fmt: skip


def print_targets(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        mark = "ok" if row["met"] else "MISSED"
        print(f"{row['target']:<36}{row['measured']:>9.2f}  {row['required']:<7}{mark}")


if __name__ == "__main__":
    main()
