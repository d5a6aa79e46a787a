"""Parallel tokenisation of a document stream into shard writers, byte-identical for any `workers`.

Documents are cut into chunks at boundaries the tokenizer never crosses (`split_for_encoding`),
chunks are grouped into tasks of about `task_chars` characters, and tasks run in `workers` spawned
processes (one tokenizer thread each) or in-process when `workers == 1`. Results are written in
task order, so the output never depends on scheduling. At most `2 * workers` tasks are in flight:
that, not the corpus size, bounds memory.

Per-document Python work is what limits corpora of short documents, so a task is encoded as few
texts as possible: consecutive documents of one split are joined with the literal end-of-text
token between them, which `tokenizers` splits out before anything else sees the text, giving the
very ids of encoding each document alone and appending the end-of-text id
(`Tokenizer.joins_documents` says when that holds). A task comes back as one id array per run of
one split; char and byte tokenizers encode with a numpy lookup (`vectorised.py`). Ids become
numpy arrays in C (`np.asarray` over the id list), and shards are written with one `write` per
array, so no Python code runs per token.

Processes, not `tokenizers`' own Rust threads (`encode_batch`): measured on 2 cores both ran
within noise of each other, and processes make `workers` mean exactly that many cores (each
worker sets `TOKENIZERS_PARALLELISM=false`; rayon's pool size is fixed at its first use, so
`RAYON_NUM_THREADS` cannot be changed per call) and convert ids to arrays in parallel too. Spawned,
never forked: a fork after `tokenizers` used its thread pool disables parallelism in the child.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.pool import AsyncResult, Pool

import numpy as np

from lmforge.data.shards import SplitWriter
from lmforge.data.tokenizer import EOT, Tokenizer, split_for_encoding
from lmforge.errors import DataError

log = logging.getLogger(__name__)

CHUNK_CHARS = 1 << 16
TASK_CHARS = 1 << 20


@dataclass(frozen=True)
class Chunk:
    name: str  # the document it comes from, for error messages
    text: str
    split: str
    last: bool  # the document's final chunk: an end-of-text token follows it


@dataclass
class EncodeStats:
    documents: int = 0
    chars: int = 0
    unknown: int = 0  # ids mapped to <unk> (char tokenizers with a capped vocabulary)


def chunk_documents(
    docs: Iterable[tuple[str, str, str]], chunkable: bool, chunk_chars: int | None = None
) -> Iterator[Chunk]:
    """(name, text, split) documents -> chunks; a document is cut only when that is exact."""
    chunk_chars = chunk_chars or CHUNK_CHARS
    for name, text, split in docs:
        pieces = split_for_encoding(text, chunk_chars) if chunkable else [text]
        for i, piece in enumerate(pieces):
            yield Chunk(name, piece, split, i == len(pieces) - 1)


def group_tasks(chunks: Iterable[Chunk], task_chars: int | None = None) -> Iterator[list[Chunk]]:
    """Consecutive chunks in groups of about `task_chars` characters."""
    task_chars = task_chars or TASK_CHARS
    task: list[Chunk] = []
    size = 0
    for chunk in chunks:
        task.append(chunk)
        size += len(chunk.text)
        if size >= task_chars:
            yield task
            task, size = [], 0
    if task:
        yield task


def plan_texts(
    task: list[Chunk], join: bool, eot_text: str, join_chars: int | None = None
) -> list[tuple[str, str, bool]]:
    """(split, text, append end-of-text id) pieces to encode for `task`, in order.

    Joined: consecutive same-split chunks are joined into texts of about `join_chars`
    characters (default CHUNK_CHARS), the end-of-text token written into the text after each
    document; a text ends only at a chunk boundary, which is always a safe cut. Not joined: one
    text per chunk. Why not one text per task: `tokenizers` encodes one long text markedly
    slower than the same characters in 64K pieces (measured on the 2-core Xeon: 1M-character
    texts 2.99 MB/s, 64K 3.58 MB/s, documents in batches 3.71 MB/s, one thread each).
    """
    if not join:
        return [(c.split, c.text, c.last) for c in task]
    limit = join_chars or CHUNK_CHARS
    runs: list[tuple[str, str, bool]] = []
    parts: list[str] = []
    size = 0
    split = task[0].split
    for chunk in task:
        if parts and (chunk.split != split or size >= limit):
            runs.append((split, "".join(parts), False))
            parts, size = [], 0
        split = chunk.split
        parts.append(chunk.text)
        size += len(chunk.text)
        if chunk.last:
            parts.append(eot_text)
    runs.append((split, "".join(parts), False))
    return runs


# -- worker side ---------------------------------------------------------------------------------

_WORKER: tuple[Tokenizer, np.dtype] | None = None


def _init_worker(tokenizer_json: str, kind: str, dtype: str) -> None:
    global _WORKER
    # One thread per worker process: `workers` is the number of cores used.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER = (Tokenizer.from_str(tokenizer_json, kind), np.dtype(dtype))


def _encode_task(texts: list[str], eots: list[bool]) -> list[np.ndarray]:
    assert _WORKER is not None, "worker not initialised"
    return encode_texts(_WORKER[0], texts, eots, _WORKER[1])


def encode_texts(
    tokenizer: Tokenizer, texts: list[str], eots: list[bool], dtype: np.dtype
) -> list[np.ndarray]:
    """Ids of each text as `dtype`, with the end-of-text id appended where `eots` says."""
    # One text per call keeps `tokenizers` on a single thread, so `workers` means what it says;
    # with joined documents a task is only a few texts.
    out = []
    for text, eot in zip(texts, eots, strict=True):
        ids = tokenizer.encode_array(text)
        if eot:
            ids = np.append(ids, np.uint32(tokenizer.eot_id))
        out.append(ids.astype(dtype, copy=False))
    return out


# -- driver side ---------------------------------------------------------------------------------


def encode_to_shards(
    tokenizer: Tokenizer,
    chunks: Iterable[Chunk],
    writers: dict[str, SplitWriter],
    workers: int,
    unknown: str = "unk",
    on_progress: Callable[[int], None] | None = None,
    task_chars: int | None = None,
    pool: Pool | None = None,
) -> EncodeStats:
    """Tokenise `chunks` into `writers` (by split), an end-of-text token after each document.

    `pool` (from `encoder_pool`) is reused across calls; without one, `workers > 1` starts and
    stops its own.
    """
    dtype = next(iter(writers.values())).dtype
    stats = EncodeStats()
    unk_id = tokenizer.unk_id
    join = tokenizer.joins_documents

    def submit(task: list[Chunk]) -> tuple[list[Chunk], list[str], list[str], list[bool]]:
        pieces = plan_texts(task, join, EOT)
        return task, [p[0] for p in pieces], [p[1] for p in pieces], [p[2] for p in pieces]

    def write(task: list[Chunk], splits: list[str], arrays: list[np.ndarray]) -> None:
        if unk_id is not None:
            missing = sum(int(np.count_nonzero(ids == unk_id)) for ids in arrays)
            if missing and unknown == "error":
                raise DataError(_unknown_message(tokenizer, task))
            stats.unknown += missing
        for split, ids in zip(splits, arrays, strict=True):
            writers[split].write(ids)
        chars = sum(len(c.text) for c in task)
        stats.chars += chars
        stats.documents += sum(c.last for c in task)
        if on_progress:
            on_progress(chars)

    tasks = (submit(task) for task in group_tasks(chunks, task_chars))
    if pool is None and workers > 1:
        with encoder_pool(tokenizer, workers, dtype) as own:
            return encode_to_shards(
                tokenizer, chunks, writers, workers, unknown, on_progress, task_chars, own
            )
    if pool is None:
        for task, splits, texts, eots in tasks:
            write(task, splits, encode_texts(tokenizer, texts, eots, dtype))
        return stats
    pending: deque[tuple[list[Chunk], list[str], AsyncResult]] = deque()
    for task, splits, texts, eots in tasks:
        pending.append((task, splits, pool.apply_async(_encode_task, (texts, eots))))
        if len(pending) >= 2 * workers:
            done, done_splits, result = pending.popleft()
            write(done, done_splits, result.get())
    while pending:
        done, done_splits, result = pending.popleft()
        write(done, done_splits, result.get())
    return stats


@contextmanager
def encoder_pool(tokenizer: Tokenizer, workers: int, dtype: np.dtype) -> Iterator[Pool | None]:
    """Worker processes for `encode_to_shards` (None for `workers <= 1`: in-process)."""
    if workers <= 1:
        yield None
        return
    with _spawn_pool(workers, (tokenizer.to_str(), tokenizer.kind, np.dtype(dtype).str)) as pool:
        yield pool


@contextmanager
def _spawn_pool(workers: int, init_args: tuple[str, str, str]) -> Iterator[Pool]:
    """A spawned pool whose workers ignore Ctrl-C; it is terminated (not drained) on exit.

    Ctrl-C reaches the whole process group. SIGINT is ignored while the pool starts its
    processes (a few milliseconds): the disposition survives exec and Python keeps an inherited
    SIG_IGN, so workers, even one still importing, never print a traceback; only the parent
    reacts. Spawn, not fork: fork is unsafe with tokenizers' threads.
    """
    pool: Pool | None = None
    try:
        with _sigint_ignored():
            pool = get_context("spawn").Pool(workers, _init_worker, init_args)
        yield pool
        pool.close()
        pool.join()
    finally:
        if pool is not None:
            pool.terminate()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may change signal handlers
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _unknown_message(tokenizer: Tokenizer, task: list[Chunk]) -> str:
    # Only on the error path: find the first chunk of the task that holds an unknown character.
    chunk = next(c for c in task if tokenizer.unk_id in tokenizer.encode_array(c.text))
    chars = sorted({c for c in chunk.text if tokenizer.token_to_id(c) is None})
    shown = ", ".join(repr(c) for c in chars[:5])
    return (
        f"{chunk.name}: characters outside the tokenizer's vocabulary ({shown}); set "
        "tokenizer.unknown=unk to map them to <unk>, or raise tokenizer.vocab_size"
    )
