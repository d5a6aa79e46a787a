"""`lmforge prepare`: raw text -> a data dir (tokenizer.json, meta.json, stats.json, shards).

Stages: read + clean every document into a spool (counting each step); build the tokenizer
(BPE trains on a seeded sample of the spool); tokenise the spool's units (`units.py`) in local
processes or as Ray tasks; assemble the units' parts into shards. Everything is written into
`<out>.partial` and renamed to `out` only when complete, so an interrupted run never leaves
something a later run would take for a data dir, and `progress.json` there lets the same command
resume where it stopped. Same inputs + config again is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from lmforge.config import Section
from lmforge.data import encode, sources, units
from lmforge.data.clean import CleanConfig, Cleaner
from lmforge.data.outdir import check_existing, commit, open_work_dir, save_progress
from lmforge.data.reader import DATA_FORMAT_VERSION
from lmforge.data.shards import SplitWriter, dtype_for_vocab
from lmforge.data.spool import SpoolWriter, read_spool
from lmforge.data.tokenizer import (
    Tokenizer,
    TokenizerConfig,
    build_tokenizer,
    split_for_encoding,
)
from lmforge.data.units import plan_split
from lmforge.errors import DataError
from lmforge.progress import progress_bar
from lmforge.verb import Flags, Verb

log = logging.getLogger(__name__)

# Keys that change where or how fast the data dir is built, never its bytes.
_NOT_HASHED = ("out", "workers", "cache_dir", "executor", "address", "storage")
# Corpora below this many characters are tokenised in-process: spawning workers costs more.
_PARALLEL_MIN_CHARS = 4_000_000


class SplitConfig(Section):
    val_fraction: float = Field(
        0.1, description="share of documents for val (one-document corpora: the last share)"
    )
    seed: int = Field(1337, description="seed of the document split")

    @field_validator("val_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError("must be >= 0 and < 1 (e.g. 0.1)")
        return value


class PrepareConfig(Section):
    """Configuration of `lmforge prepare`."""

    source: str | list[str] = Field(
        "pydocs", description="file, dir, glob, url:..., pydocs, or a list of them"
    )
    out: str | None = Field(None, description="data dir to write (default: data/<source name>)")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    encoding_errors: sources.EncodingErrors = Field(
        "strict", description="bad UTF-8, NUL bytes: strict (error) | replace | skip (the file)"
    )
    text_field: str = Field(
        "text", description="JSONL/Parquet/Arrow: the field holding the text (a.b nests)"
    )
    workers: int = Field(0, description="tokenising processes; 0 = auto (1 for small corpora)")
    executor: Literal["local", "ray"] = Field(
        "local", description="local processes, or ray: tokenise units as tasks on a Ray cluster"
    )
    address: str | None = Field(
        None, description="ray: the cluster address HOST:PORT (default: $RAY_ADDRESS)"
    )
    storage: str | None = Field(
        None, description="ray: a path every node reaches (out= must be inside it)"
    )
    shard_tokens: int = Field(100_000_000, description="max tokens per shard file")
    cache_dir: str = Field("~/.cache/lmforge", description="where url: sources are downloaded")
    pydocs_modules: int | None = Field(
        None, description="pydocs: only the first N stdlib modules (quick runs)"
    )

    # `jsonl_field` was the key's name before Parquet and Arrow sources; still accepted (with a
    # deprecation warning, by `Section`), also from the command line.
    renamed_keys: ClassVar[dict[str, str]] = {"jsonl_field": "text_field"}

    @field_validator("source")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        if not value or (isinstance(value, list) and not all(value)):
            raise ValueError("give at least one source (a path, url:..., or pydocs)")
        return value

    @field_validator("workers")
    @classmethod
    def _non_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be >= 0 (0 = auto)")
        return value

    @field_validator("shard_tokens")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1")
        return value

    @property
    def source_specs(self) -> list[str]:
        return [self.source] if isinstance(self.source, str) else list(self.source)

    def source_options(self) -> sources.SourceOptions:
        return sources.SourceOptions(
            encoding_errors=self.encoding_errors,
            text_field=self.text_field,
            cache_dir=Path(self.cache_dir).expanduser(),
            pydocs_limit=self.pydocs_modules,
        )

    def content_hash(self) -> str:
        """Hash of every key that affects the output bytes."""
        data = {k: v for k, v in self.model_dump(mode="json").items() if k not in _NOT_HASHED}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass
class PrepareResult:
    out: Path
    meta: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    up_to_date: bool = False


def default_out(specs: list[str]) -> str:
    """`data/<name>` from the first source: `pydocs`, a file stem, or a generic stem's parent."""
    spec = specs[0].removeprefix("url:").partition("#")[0]
    if spec.startswith(("http://", "https://")):
        spec = spec.split("://", 1)[1].rstrip("/")
    parts = Path(spec).expanduser().parts
    for i, part in enumerate(parts):
        if set("*?[") & set(part):
            parts = parts[:i]
            break
    if not parts:
        return "data/corpus"
    path = Path(*parts)
    name = path.name.split(".")[0] if not path.is_dir() else path.name
    if name.lower() in ("input", "train", "data", "corpus", "text", "all", "") and path.parent.name:
        name = path.parent.name
    return f"data/{name or 'corpus'}"


# -------------------------------------------------------------------------------------------------


def prepare(cfg: PrepareConfig, overwrite: bool = False) -> PrepareResult:
    """Build the data dir `cfg` describes (or find it up to date); the library entry point."""
    out = Path(cfg.out or default_out(cfg.source_specs))
    options = cfg.source_options()
    inputs = sources.resolve(cfg.source_specs, options)
    fingerprint = _fingerprint(inputs, cfg)
    existing = check_existing(
        out, cfg.content_hash(), fingerprint, overwrite, cfg.model_dump(mode="json")
    )
    if existing is not None:
        return PrepareResult(out, existing, up_to_date=True)
    # Kept on failure or interruption: the same command resumes it, anything else discards it.
    work, state = open_work_dir(out, cfg.content_hash(), fingerprint, fresh=overwrite)
    try:
        meta, stats = _build(cfg, inputs, options, work, state, out)
    except BaseException:
        if "spool" not in state:  # failed while reading: nothing worth resuming
            shutil.rmtree(work, ignore_errors=True)
        raise
    meta["source_fingerprint"] = fingerprint
    _write_json(work / "stats.json", stats)
    _write_json(work / "meta.json", meta)  # written last: its presence means complete
    commit(work, out)
    return PrepareResult(out, meta, stats)


def _fingerprint(inputs: list[sources.Input], cfg: PrepareConfig) -> str:
    digest = hashlib.sha256(sources.fingerprint(inputs).encode())
    if cfg.tokenizer.path:  # a gpt2/file tokenizer is an input too
        path = Path(cfg.tokenizer.path).expanduser()
        for item in sorted(path.iterdir()) if path.is_dir() else [path]:
            if item.is_file():
                stat = item.stat()
                digest.update(f"{item.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _build(
    cfg: PrepareConfig,
    inputs: list[sources.Input],
    options: sources.SourceOptions,
    work: Path,
    state: dict[str, Any],
    out: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Spool, tokenizer, units, shards; each stage is skipped when `state` says it is done."""
    timings: dict[str, float] = state.setdefault("timings", {})
    spool_path = work / "spool.bin"
    if "spool" not in state or not spool_path.is_file():
        start = time.perf_counter()
        state.pop("tokenizer", None)
        state["spool"] = _spool(cfg, inputs, options, spool_path)
        timings["read_clean_s"] = time.perf_counter() - start
        save_progress(work, state)
    spool = state["spool"]

    tokenizer_path = work / "tokenizer.json"
    if state.get("tokenizer") and tokenizer_path.is_file():
        tokenizer = Tokenizer.from_file(tokenizer_path, state["tokenizer"])
    else:
        start = time.perf_counter()
        with progress_bar() as progress:
            progress.add_task(f"building {cfg.tokenizer.kind} tokenizer", total=None)
            texts = _spool_texts(spool_path)
            if cfg.tokenizer.kind == "bpe":
                budget, seed = cfg.tokenizer.train_bytes, cfg.split.seed
                texts = training_sample(texts, spool["bytes"], budget, seed)
            tokenizer = build_tokenizer(cfg.tokenizer, texts)
        tokenizer.save(tokenizer_path)
        timings["tokenizer_s"] = time.perf_counter() - start
        state["tokenizer"] = tokenizer.kind
        save_progress(work, state)

    start = time.perf_counter()
    dtype = dtype_for_vocab(tokenizer.vocab_size)
    parts = work / "units"
    parts.mkdir(exist_ok=True)
    all_units = units.plan_units([tuple(u) for u in spool["units"]], spool["size"])
    job = units.UnitJob(
        spool=str(spool_path.resolve()),
        parts=str(parts.resolve()),
        tokenizer=str(tokenizer_path.resolve()),
        kind=tokenizer.kind,
        dtype=dtype.str,
        num_docs=spool["documents"],
        val_fraction=cfg.split.val_fraction,
        seed=cfg.split.seed,
        unknown=cfg.tokenizer.unknown,
    )
    done = {u.index: m for u in all_units if (m := units.finished(parts, u.index)) is not None}
    resumed = len(done)
    todo = [u for u in all_units if u.index not in done]
    workers = _resolve_workers(cfg.workers, spool["chars"], tokenizer.vector_encoder is not None)
    if cfg.executor == "ray":
        done.update(_tokenise_on_ray(cfg, job, todo, out))
    else:
        done.update(_tokenise_here(tokenizer, job, todo, workers, spool["chars"], done))
    timings["tokenise_s"] = timings.get("tokenise_s", 0.0) + time.perf_counter() - start

    start = time.perf_counter()
    writers = {s: SplitWriter(work, s, dtype, cfg.shard_tokens) for s in units.SPLITS}
    try:
        units.assemble(parts, all_units, writers)
    finally:
        shards = {s: [p.name for p in w.close()] for s, w in writers.items()}
    timings["assemble_s"] = time.perf_counter() - start
    shutil.rmtree(parts)
    spool_path.unlink()

    tokens = {s: writers[s].num_tokens for s in units.SPLITS}
    _warn_if_val_share_is_off(tokens, spool["documents"], cfg.split.val_fraction)
    val_mask = plan_split(spool["documents"], cfg.split.val_fraction, cfg.split.seed)
    split_docs = _split_documents(spool["documents"], val_mask, cfg.split.val_fraction)
    meta = _meta(cfg, tokenizer, tokens, split_docs, shards, spool["clean"])
    read = dict(spool["read"])
    stats = {
        "read": {k: v for k, v in read.items() if k != "skipped"},
        "skipped": read.get("skipped", [])[:100],
        "clean": spool["clean"],
        "unknown_tokens": sum(m["unknown"] for m in done.values()),
        "workers": workers,
        "executor": cfg.executor,
        "units": len(all_units),
        "resumed_units": resumed,
        "timings": timings,
    }
    return meta, stats


def _spool(
    cfg: PrepareConfig, inputs: list[sources.Input], options: sources.SourceOptions, path: Path
) -> dict[str, Any]:
    """Read + clean every document into the spool; what later stages need to know about it."""
    read_stats = sources.ReadStats()
    cleaner = Cleaner(cfg.clean)
    spool = SpoolWriter(path)
    try:
        _clean_into(spool, sources.iter_documents(inputs, options, read_stats), cleaner)
    finally:
        spool.close()
    _check_not_empty(cfg, read_stats, cleaner, spool)
    return {
        "documents": spool.documents,
        "chars": spool.chars,
        "bytes": spool.bytes,
        "size": path.stat().st_size,
        "units": spool.units,
        "read": vars(read_stats),
        "clean": [s.as_dict() for s in cleaner.stats],
    }


def _tokenise_here(
    tokenizer: Tokenizer,
    job: units.UnitJob,
    todo: list[units.Unit],
    workers: int,
    total_chars: int,
    done: dict[int, dict[str, Any]],
) -> dict[int, dict[str, Any]]:
    """The units left, one after the other, each spread over `workers` local processes."""
    results = {}
    dtype = np.dtype(job.dtype)
    with progress_bar() as progress, encode.encoder_pool(tokenizer, workers, dtype) as pool:
        already = sum(m["chars"] for m in done.values())
        task = progress.add_task("tokenising (chars)", total=total_chars, completed=already)
        for unit in todo:
            results[unit.index] = units.tokenise_unit(
                job, unit, workers, pool, tokenizer, lambda n: progress.advance(task, n)
            )
    return results


def _tokenise_on_ray(
    cfg: PrepareConfig, job: units.UnitJob, todo: list[units.Unit], out: Path
) -> dict[int, dict[str, Any]]:
    """The units left as Ray tasks (one CPU each) on the cluster at `address`/`$RAY_ADDRESS`."""
    from lmforge.executor import ExecutorSpec, check_storage, connect_ray, run_jobs

    ray = connect_ray(cfg.address)
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    check_storage(nodes, cfg.storage, out)
    spec = ExecutorSpec(
        "ray", workers=cfg.workers, threads=1, address=cfg.address, storage=cfg.storage
    )
    jobs = [units.job_args(job, unit) for unit in todo]
    return {todo[i].index: marker for i, marker in run_jobs(units.run_unit_job, jobs, spec)}


def _clean_into(spool: SpoolWriter, docs: Iterator[sources.Document], cleaner: Cleaner) -> None:
    with progress_bar() as progress:
        task = progress.add_task("reading + cleaning (docs)", total=None)
        for doc in docs:
            text = cleaner(doc.text)
            if text is not None:
                spool.append(doc.name, text)
            progress.advance(task)


def _check_not_empty(
    cfg: PrepareConfig, read: sources.ReadStats, cleaner: Cleaner, spool: SpoolWriter
) -> None:
    names = ", ".join(cfg.source_specs)
    if _all_empty(cfg.source_specs):
        raise DataError(f"source {names} is empty (0 bytes); give a file with text in it")
    if read.documents == 0:
        skipped = f" ({read.summary()})" if read.summary() else ""
        raise DataError(f"no documents in source {names}{skipped}; check the source paths")
    if spool.documents == 0:
        worst = cleaner.biggest_filter()
        which = f"; step '{worst.name}' removed {worst.docs_in - worst.docs_out}" if worst else ""
        raise DataError(
            f"all {read.documents} documents from {names} were filtered out{which}; relax the "
            "clean.* settings (e.g. clean.min_chars)"
        )


def _all_empty(specs: list[str]) -> bool:
    """True when every source is a plain local file of 0 bytes (not a glob, dir or URL)."""
    paths = [Path(s) for s in specs]
    return all(p.is_file() and p.stat().st_size == 0 for p in paths)


def _spool_texts(path: Path) -> Iterator[str]:
    # Chunked like tokenisation: BPE training then sees the same pre-tokens with bounded strings.
    for _, text in read_spool(path):
        yield from split_for_encoding(text, encode.CHUNK_CHARS)


def training_sample(
    texts: Iterable[str], total_bytes: int, budget: int, seed: int
) -> Iterator[str]:
    """A seeded sample of `texts` (spool chunks) of at most `budget` UTF-8 bytes, for BPE.

    Everything when the corpus fits; else each chunk is kept with probability budget/total,
    drawn in spool order from `seed`, until the budget is spent. It runs in the driver on the
    spool, so the sample is the same for any number of workers and any executor.
    """
    if total_bytes <= budget:
        yield from texts
        return
    keep = budget / total_bytes
    rng = np.random.default_rng(seed)
    used = 0
    for text in texts:
        if rng.random() >= keep:
            continue
        size = len(text.encode("utf-8"))
        if used + size > budget:
            continue  # a smaller chunk later may still fit
        used += size
        yield text


def _warn_if_val_share_is_off(tokens: dict[str, int], num_docs: int, val_fraction: float) -> None:
    """Documents go to val whole, so a corpus of a few unequal documents (say three text files)
    can put a whole source in val and none of it in train; say so instead of hiding it."""
    total = sum(tokens.values())
    if num_docs < 2 or val_fraction == 0.0 or total == 0:
        return
    share = tokens["val"] / total
    if val_fraction / 2 <= share <= 2 * val_fraction:
        return
    log.warning(
        "warning: val holds %.0f%% of the tokens, not the %.0f%% of split.val_fraction: the "
        "split takes whole documents, and this corpus has %d of unequal size (a text file is "
        "one document). To split inside the text, give it as many smaller documents (JSONL "
        "records or files) or as one file, whose last share becomes val.",
        100 * share,
        100 * val_fraction,
        num_docs,
    )


def _split_documents(num_docs: int, val_mask: np.ndarray, val_fraction: float) -> dict[str, int]:
    if num_docs == 1 and val_fraction > 0.0:
        return {"train": 1, "val": 1}
    val = int(val_mask.sum())
    return {"train": num_docs - val, "val": val}


def _resolve_workers(workers: int, chars: int, vectorised: bool = False) -> int:
    if workers:
        return workers
    # The numpy char/byte path outruns the driver's reading of the spool, so shipping text to
    # worker processes would only add copies; small corpora do not pay for spawning.
    if vectorised or chars < _PARALLEL_MIN_CHARS:
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def _meta(
    cfg: PrepareConfig,
    tokenizer: Tokenizer,
    tokens: dict[str, int],
    documents: dict[str, int],
    shards: dict[str, list[str]],
    cleaning: list[dict[str, Any]],
) -> dict[str, Any]:
    from lmforge import __version__

    return {
        "format_version": DATA_FORMAT_VERSION,
        "lmforge_version": __version__,
        "vocab_size": tokenizer.vocab_size,
        "tokenizer_hash": tokenizer.hash,
        "tokenizer_kind": tokenizer.kind,
        "dtype": dtype_for_vocab(tokenizer.vocab_size).name,
        "eot_id": tokenizer.eot_id,
        "pad_id": tokenizer.pad_id,
        "special_tokens": tokenizer.special_tokens,
        "tokens": tokens,
        "documents": documents,
        "shards": shards,
        "split": {
            "by": "tail" if documents == {"train": 1, "val": 1} else "document",
            "val_fraction": cfg.split.val_fraction,
            "seed": cfg.split.seed,
        },
        "sources": cfg.source_specs,
        "source_fingerprint": "",
        "config": cfg.model_dump(mode="json"),
        "config_hash": cfg.content_hash(),
        "cleaning": cleaning,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


# -------------------------------------------------------------------------------------------------
# CLI.


def format_report(result: PrepareResult) -> str:
    """The stdout report: the cleaning table (docs/bytes in and out per step) and a summary."""
    meta, lines = result.meta, []
    read = result.stats.get("read")
    if read:
        lines.append(
            f"{'step':<16}{'docs in':>10}{'docs out':>10}{'bytes in':>14}{'bytes out':>14}"
        )
        lines.append(f"{'read':<16}{'':>10}{read['documents']:>10,}{'':>14}{read['bytes']:>14,}")
        for step in result.stats["clean"]:
            lines.append(
                f"{step['name']:<16}{step['docs_in']:>10,}{step['docs_out']:>10,}"
                f"{step['bytes_in']:>14,}{step['bytes_out']:>14,}"
            )
        notes = sources.ReadStats(**read).summary()
        if notes:
            lines.append(f"encoding_errors={meta['config']['encoding_errors']}: {notes}")
        if result.stats.get("unknown_tokens"):
            lines.append(f"characters mapped to <unk>: {result.stats['unknown_tokens']:,}")
        if result.stats.get("resumed_units"):
            lines.append(
                f"resumed an interrupted build: {result.stats['resumed_units']} of "
                f"{result.stats['units']} units were already tokenised"
            )
        lines.append("")
    lines.append(f"data dir:  {result.out}")
    lines.append(
        f"tokenizer: {meta['tokenizer_kind']}, vocab {meta['vocab_size']:,} "
        f"(<|endoftext|> = {meta['eot_id']}), {meta['dtype']} shards"
    )
    for split in ("train", "val"):
        lines.append(
            f"{split + ':':<10} {meta['tokens'][split]:,} tokens, "
            f"{meta['documents'][split]:,} documents, {len(meta['shards'][split])} shard(s)"
        )
    return "\n".join(lines)


def run(cfg: PrepareConfig, flags: Flags) -> int:
    if cfg.out is None:
        print(f"out not set; writing to {default_out(cfg.source_specs)}")
    result = prepare(cfg, overwrite=flags.overwrite)
    if result.up_to_date:
        print(f"{result.out} is up to date (same sources and config); nothing to do")
    print(format_report(result))
    sys.stdout.flush()
    return 0


VERB = Verb(
    name="prepare",
    summary="Clean and tokenise raw text into a data dir (tokenizer.json, shards, meta.json).",
    config=PrepareConfig,
    run=run,
    positionals=("source*",),
    usage="lmforge prepare [RECIPE] [SOURCE ...] [key=value ...] [--overwrite]",
    flags=("--overwrite", "--debug", "--help"),
)
