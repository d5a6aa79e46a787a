"""Parallel tokenisation of a document stream into shard writers, byte-identical for any `workers`.

Documents are cut into chunks at boundaries the tokenizer never crosses (`split_for_encoding`),
chunks are grouped into tasks of about `task_chars` characters, and tasks run in `workers` spawned
processes (one tokenizer thread each) or in-process when `workers == 1`. Results are written in
task order, so the output never depends on scheduling. At most `2 * workers` tasks are in flight:
that, not the corpus size, bounds memory.
"""

from __future__ import annotations

import logging
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
from lmforge.data.tokenizer import Tokenizer, split_for_encoding
from lmforge.errors import DataError

log = logging.getLogger(__name__)

CHUNK_CHARS = 1 << 16
TASK_CHARS = 1 << 18


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


# -- worker side ---------------------------------------------------------------------------------

_WORKER: tuple[Tokenizer, np.dtype] | None = None


def _init_worker(tokenizer_json: str, kind: str, dtype: str) -> None:
    global _WORKER
    _WORKER = (Tokenizer.from_str(tokenizer_json, kind), np.dtype(dtype))


def _encode_task(texts: list[str]) -> list[np.ndarray]:
    assert _WORKER is not None, "worker not initialised"
    return encode_texts(_WORKER[0], texts, _WORKER[1])


def encode_texts(tokenizer: Tokenizer, texts: list[str], dtype: np.dtype) -> list[np.ndarray]:
    # One text per call keeps `tokenizers` on a single thread, so `workers` means what it says.
    return [np.asarray(tokenizer.encode(text), dtype=dtype) for text in texts]


# -- driver side ---------------------------------------------------------------------------------


def encode_to_shards(
    tokenizer: Tokenizer,
    chunks: Iterable[Chunk],
    writers: dict[str, SplitWriter],
    workers: int,
    unknown: str = "unk",
    on_progress: Callable[[int], None] | None = None,
) -> EncodeStats:
    """Tokenise `chunks` into `writers` (by split), an end-of-text token after each document."""
    dtype = next(iter(writers.values())).dtype
    stats = EncodeStats()
    eot = np.asarray([tokenizer.eot_id], dtype=dtype)
    unk_id = tokenizer.unk_id

    def write(task: list[Chunk], arrays: list[np.ndarray]) -> None:
        pieces: dict[str, list[np.ndarray]] = {split: [] for split in writers}
        for chunk, ids in zip(task, arrays, strict=True):
            if unk_id is not None:
                missing = int(np.count_nonzero(ids == unk_id))
                if missing and unknown == "error":
                    raise DataError(_unknown_message(tokenizer, chunk))
                stats.unknown += missing
            pieces[chunk.split].append(ids)
            stats.chars += len(chunk.text)
            if chunk.last:
                pieces[chunk.split].append(eot)
                stats.documents += 1
        # One write per split per task: many short documents would otherwise mean many syscalls.
        for split, arrays_of_split in pieces.items():
            if arrays_of_split:
                writers[split].write(np.concatenate(arrays_of_split))
        if on_progress:
            on_progress(sum(len(c.text) for c in task))

    tasks = group_tasks(chunks)
    if workers <= 1:
        for task in tasks:
            write(task, encode_texts(tokenizer, [c.text for c in task], dtype))
        return stats
    with _spawn_pool(workers, (tokenizer.to_str(), tokenizer.kind, dtype.str)) as pool:
        pending: deque[tuple[list[Chunk], AsyncResult]] = deque()
        for task in tasks:
            pending.append((task, pool.apply_async(_encode_task, ([c.text for c in task],))))
            if len(pending) >= 2 * workers:
                done_task, result = pending.popleft()
                write(done_task, result.get())
        while pending:
            done_task, result = pending.popleft()
            write(done_task, result.get())
    return stats


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


def _unknown_message(tokenizer: Tokenizer, chunk: Chunk) -> str:
    chars = sorted({c for c in chunk.text if tokenizer.token_to_id(c) is None})
    shown = ", ".join(repr(c) for c in chars[:5])
    return (
        f"{chunk.name}: characters outside the tokenizer's vocabulary ({shown}); set "
        "tokenizer.unknown=unk to map them to <unk>, or raise tokenizer.vocab_size"
    )
