"""Columnar and zstd-compressed sources: Parquet, Arrow (`datasets.save_to_disk`) and `.zst`.

Everything streams: Parquet one batch of rows of the text column at a time (row group by row
group), Arrow IPC files one record batch at a time, zstd through a bounded decompression buffer.
Damage is reported as `FormatDamage` (the file's name and what is wrong); `sources.py` turns it
into an error or, under `encoding_errors=skip`, a skipped (rest of the) file. `pyarrow` and
`zstandard` are imported only when such a file is read (the `[formats]` extra).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, DataError

TABLE_SUFFIXES = (".parquet", ".arrow")
_READ_BYTES = 1 << 20
_BATCH_ROWS = 1024
_ARROW_FILE_MAGIC = b"ARROW1"


class FormatDamage(Exception):
    """A file that cannot be read to its end (truncated, corrupt); the message says which/why."""


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(
            f"reading this source needs the '{module}' package; install lmforge[formats] "
            "(pip install 'lmforge[formats]')"
        ) from None


# -------------------------------------------------------------------------------------------------
# zstd.


class ZstdReader(io.RawIOBase):
    """Raw stream of the decompressed bytes of a (multi-frame) `.zst` file.

    `zstandard`'s own stream reader returns a short stream, silently, when the last frame is cut
    off; this one decompresses frame by frame and raises `FormatDamage` at a truncated end.
    """

    def __init__(self, path: Path) -> None:
        zstandard = _require("zstandard")
        self._path = path
        self._raw = open(path, "rb")  # closed in close()
        self._dctx = zstandard.ZstdDecompressor()
        self._error = zstandard.ZstdError
        self._obj = self._dctx.decompressobj()
        self._in_frame = False  # bytes of the current frame were fed but it has not ended
        self._pending = b""
        self._offset = 0  # compressed bytes consumed, for messages

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            if not self._fill():
                return 0
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _fill(self) -> bool:
        """Decompress more into `_pending`; False at a clean end of the file."""
        data = self._raw.read(_READ_BYTES)
        if not data:
            if self._in_frame:
                raise FormatDamage(
                    f"{self._path} is truncated: its last zstd frame ends early (after "
                    f"{self._offset} compressed bytes)"
                )
            return False
        out = []
        while data:
            try:
                out.append(self._obj.decompress(data))
            except self._error as exc:
                raise FormatDamage(
                    f"{self._path} is not valid zstd near compressed byte {self._offset} ({exc})"
                ) from None
            self._in_frame = not self._obj.eof
            consumed = len(data) - len(self._obj.unused_data) if self._obj.eof else len(data)
            self._offset += consumed
            data = self._obj.unused_data if self._obj.eof else b""
            if self._obj.eof:
                self._obj = self._dctx.decompressobj()  # the next frame, if any
        self._pending = b"".join(out)
        return True

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_zstd(path: Path) -> io.BufferedReader:
    return io.BufferedReader(ZstdReader(path), buffer_size=_READ_BYTES)


# -------------------------------------------------------------------------------------------------
# Parquet and Arrow tables.


def saved_dataset_files(root: Path) -> list[Path] | None:
    """Arrow files of a `datasets.save_to_disk` dir in their order, or None if it is not one.

    A `Dataset` dir lists its files in `state.json`; a `DatasetDict` dir names its splits (each a
    `Dataset` dir) in `dataset_dict.json`, read in that order.
    """
    state, splits = root / "state.json", root / "dataset_dict.json"
    try:
        if state.is_file():
            files = json.loads(state.read_text(encoding="utf-8"))["_data_files"]
            return [root / f["filename"] for f in files]
        if splits.is_file():
            names = json.loads(splits.read_text(encoding="utf-8"))["splits"]
            found: list[Path] = []
            for name in names:
                found.extend(saved_dataset_files(root / name) or [])
            return found
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{root} looks like a datasets.save_to_disk dir but its metadata is damaged ({exc}); "
            "save it again"
        ) from None
    return None


def iter_table_texts(path: Path, text_field: str) -> Iterator[tuple[int, Any]]:
    """(row, value of `text_field`) for each row of a Parquet or Arrow file, streamed.

    Raises DataError when the field is not in the file (naming the columns it has) and
    FormatDamage when the file is truncated or corrupt.
    """
    pa = _require("pyarrow")
    top, _, rest = text_field.partition(".")
    try:
        batches = _parquet_batches(path, top) if path.suffix == ".parquet" else _arrow_batches(path)
        row = 0
        for batch in batches:
            if top not in batch.schema.names:
                raise DataError(
                    f"{path} has no column '{top}' (found: {', '.join(batch.schema.names[:8])}); "
                    "set text_field=NAME"
                )
            for value in batch.column(top).to_pylist():
                yield row, _nested(value, rest) if rest else value
                row += 1
    except (pa.lib.ArrowException, OSError) as exc:
        raise FormatDamage(f"{path} is truncated or corrupt ({exc})") from None


def _parquet_batches(path: Path, column: str) -> Iterator[Any]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path, memory_map=False)
    names = parquet.schema_arrow.names
    if column not in names:
        raise DataError(
            f"{path} has no column '{column}' (found: {', '.join(names[:8])}); set text_field=NAME"
        )
    # Only the text column is read, one batch of rows at a time (a row group is never read whole
    # when it is larger than a batch's worth of pages).
    yield from parquet.iter_batches(batch_size=_BATCH_ROWS, columns=[column])


def _arrow_batches(path: Path) -> Iterator[Any]:
    import pyarrow as pa

    # Buffered reads, not a memory map: mapped pages would count towards RSS as the file is read.
    with pa.OSFile(str(path), "rb") as source:
        is_file_format = source.read(len(_ARROW_FILE_MAGIC)) == _ARROW_FILE_MAGIC
        source.seek(0)
        if is_file_format:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        else:  # the stream format, which datasets writes
            yield from pa.ipc.open_stream(source)


_MISSING = object()


def _nested(value: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def is_missing(value: Any) -> bool:
    return value is _MISSING
