"""A spool: the cleaned documents, written once to a scratch file and read back in order.

`prepare` reads and cleans the sources once, spools the survivors, then trains the tokenizer and
tokenises from the spool, so memory stays bounded and `url:`/`pydocs` sources are read once.
Record: name length (u32), text length in bytes (u64), name, UTF-8 text. The writer also cuts
the spool into *units* of about `unit_bytes` of text at document borders, `(offset, first
document)` each: the pieces tokenised (and resumed, and sent to Ray) independently.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_RECORD = struct.Struct("<IQ")


UNIT_BYTES = 64_000_000


class SpoolWriter:
    def __init__(self, path: Path, unit_bytes: int | None = None) -> None:
        self.path = path
        self.documents = 0
        self.chars = 0
        self.bytes = 0
        self.unit_bytes = unit_bytes or UNIT_BYTES
        self.units: list[tuple[int, int]] = []  # (byte offset, first document) of each unit
        self._offset = 0
        self._in_unit = self.unit_bytes  # the first document starts a unit
        self._file: BinaryIO = open(path, "wb")  # closed in close()

    def append(self, name: str, text: str) -> None:
        name_bytes, text_bytes = name.encode("utf-8"), text.encode("utf-8")
        if self._in_unit >= self.unit_bytes:
            self.units.append((self._offset, self.documents))
            self._in_unit = 0
        self._in_unit += len(text_bytes)
        self._offset += _RECORD.size + len(name_bytes) + len(text_bytes)
        self._file.write(_RECORD.pack(len(name_bytes), len(text_bytes)))
        self._file.write(name_bytes)
        self._file.write(text_bytes)
        self.documents += 1
        self.chars += len(text)
        self.bytes += len(text_bytes)

    def close(self) -> None:
        self._file.close()


def read_spool(path: Path, start: int = 0, end: int | None = None) -> Iterator[tuple[str, str]]:
    """(name, text) of each spooled document in bytes [start, end), in the order written."""
    with open(path, "rb", buffering=1 << 20) as f:
        f.seek(start)
        while (end is None or f.tell() < end) and (header := f.read(_RECORD.size)):
            name_len, text_len = _RECORD.unpack(header)
            name = f.read(name_len).decode("utf-8")
            yield name, f.read(text_len).decode("utf-8")
