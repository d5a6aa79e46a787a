"""A spool: the cleaned documents, written once to a scratch file and read back in order.

`prepare` reads and cleans the sources once, spools the survivors, then trains the tokenizer and
tokenises from the spool, so memory stays bounded and `url:`/`pydocs` sources are read once.
Record: name length (u32), text length in bytes (u64), name, UTF-8 text.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_RECORD = struct.Struct("<IQ")


class SpoolWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.documents = 0
        self.chars = 0
        self.bytes = 0
        self._file: BinaryIO = open(path, "wb")  # closed in close()

    def append(self, name: str, text: str) -> None:
        name_bytes, text_bytes = name.encode("utf-8"), text.encode("utf-8")
        self._file.write(_RECORD.pack(len(name_bytes), len(text_bytes)))
        self._file.write(name_bytes)
        self._file.write(text_bytes)
        self.documents += 1
        self.chars += len(text)
        self.bytes += len(text_bytes)

    def close(self) -> None:
        self._file.close()


def read_spool(path: Path) -> Iterator[tuple[str, str]]:
    """(name, text) of each spooled document, in the order written."""
    with open(path, "rb", buffering=1 << 20) as f:
        while header := f.read(_RECORD.size):
            name_len, text_len = _RECORD.unpack(header)
            name = f.read(name_len).decode("utf-8")
            yield name, f.read(text_len).decode("utf-8")
