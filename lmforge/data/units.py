"""Tokenising the spool unit by unit: resumable, and the same job locally or as Ray tasks.

A unit is a run of whole documents of the spool (~64 MB of text, `spool.UNIT_BYTES`). Each is
tokenised into raw part files, `units/u00012.train.tok` and `.val.tok` (little-endian ids, no
header), and is done only when its marker `units/u00012.json` (token counts, characters,
`<unk>` count) has been renamed into place, after the parts are closed. A rerun after an
interruption skips every unit with a marker; `assemble` then streams the parts, in unit order,
into the shards. Whatever executes the units, the shards are the same bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data import encode
from lmforge.data.shards import SplitWriter
from lmforge.data.spool import read_spool
from lmforge.data.tokenizer import Tokenizer

SPLITS = ("train", "val")
_COPY_TOKENS = 1 << 24  # tokens copied per read while assembling (64 MB at uint32)


@dataclass(frozen=True)
class Unit:
    index: int
    start: int  # byte offsets of the unit's records in the spool
    end: int
    first_doc: int


@dataclass(frozen=True)
class UnitJob:
    """Everything a unit's tokenisation needs, as plain values (it may run on another node)."""

    spool: str
    parts: str
    tokenizer: str  # path of tokenizer.json
    kind: str
    dtype: str
    num_docs: int
    val_fraction: float
    seed: int
    unknown: str


def plan_split(num_docs: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of val documents: a seeded random `val_fraction` of them (at least one).

    A one-document corpus gets an all-False mask; `_route` then cuts its tail off instead.
    """
    mask = np.zeros(num_docs, dtype=bool)
    if num_docs < 2 or val_fraction == 0.0:
        return mask
    count = min(num_docs - 1, max(1, round(num_docs * val_fraction)))
    mask[np.random.default_rng(seed).permutation(num_docs)[:count]] = True
    return mask


def route_documents(
    docs: Iterable[tuple[str, str]], val_mask: np.ndarray, val_fraction: float, first_doc: int = 0
) -> Iterator[tuple[str, str, str]]:
    """(name, text, split) per document (numbered from `first_doc`); a lone document is split
    at its last `val_fraction` of characters."""
    for i, (name, text) in enumerate(docs, start=first_doc):
        if len(val_mask) == 1 and val_fraction > 0.0:
            cut = int(len(text) * (1.0 - val_fraction))  # nanoGPT's character cut
            yield name, text[:cut], "train"
            yield name, text[cut:], "val"
        else:
            yield name, text, "val" if val_mask[i] else "train"


def plan_units(offsets: list[tuple[int, int]], spool_size: int) -> list[Unit]:
    ends = [start for start, _ in offsets[1:]] + [spool_size]
    return [Unit(i, s, e, d) for i, ((s, d), e) in enumerate(zip(offsets, ends, strict=True))]


def marker(parts: Path, index: int) -> Path:
    return parts / f"u{index:05d}.json"


def part_path(parts: Path, index: int, split: str) -> Path:
    return parts / f"u{index:05d}.{split}.tok"


def finished(parts: Path, index: int) -> dict[str, Any] | None:
    """The marker of a finished unit, or None."""
    try:
        return json.loads(marker(parts, index).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class _PartWriter:
    """The `SplitWriter` interface `encode_to_shards` needs, over one raw part file."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.num_tokens = 0
        self._file = open(path, "wb")  # closed in close()

    def write(self, tokens: np.ndarray) -> None:
        self._file.write(np.asarray(tokens, dtype=self.dtype).tobytes())
        self.num_tokens += len(tokens)

    def close(self) -> None:
        self._file.close()


def tokenise_unit(
    job: UnitJob,
    unit: Unit,
    workers: int = 1,
    pool: Any = None,
    tokenizer: Tokenizer | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Tokenise one unit into its part files, then write its marker; returns the marker."""
    parts = Path(job.parts)
    tokenizer = tokenizer or Tokenizer.from_file(job.tokenizer, job.kind)
    dtype = np.dtype(job.dtype)
    writers = {s: _PartWriter(part_path(parts, unit.index, s), dtype) for s in SPLITS}
    val_mask = plan_split(job.num_docs, job.val_fraction, job.seed)
    docs = route_documents(
        read_spool(Path(job.spool), unit.start, unit.end),
        val_mask,
        job.val_fraction,
        first_doc=unit.first_doc,
    )
    try:
        stats = encode.encode_to_shards(
            tokenizer,
            encode.chunk_documents(docs, tokenizer.chunkable),
            writers,  # type: ignore[arg-type]
            workers,
            job.unknown,
            on_progress=on_progress,
            pool=pool,
        )
    finally:
        for writer in writers.values():
            writer.close()
    done = {
        "tokens": {s: w.num_tokens for s, w in writers.items()},
        "documents": stats.documents,
        "chars": stats.chars,
        "unknown": stats.unknown,
    }
    tmp = marker(parts, unit.index).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(done), encoding="utf-8")
    os.replace(tmp, marker(parts, unit.index))  # the unit counts as done from here on
    return done


def run_unit_job(job: dict[str, Any], unit: dict[str, Any]) -> dict[str, Any]:
    """`tokenise_unit` for executors: plain dicts in, the marker out (one thread)."""
    return tokenise_unit(UnitJob(**job), Unit(**unit))


def job_args(job: UnitJob, unit: Unit) -> tuple[dict[str, Any], dict[str, Any]]:
    return asdict(job), asdict(unit)


def assemble(parts: Path, units: list[Unit], writers: dict[str, SplitWriter]) -> None:
    """Stream every unit's parts, in order, into the split writers (the final shards)."""
    for unit in units:
        for split in SPLITS:
            for block in _blocks(part_path(parts, unit.index, split), writers[split].dtype):
                writers[split].write(block)


def _blocks(path: Path, dtype: np.dtype) -> Iterator[np.ndarray]:
    with open(path, "rb") as f:
        while block := f.read(_COPY_TOKENS * dtype.itemsize):
            yield np.frombuffer(block, dtype=dtype)
