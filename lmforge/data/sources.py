"""Where documents come from: files, directories, globs, JSONL, Parquet, Arrow, `pydocs`, `url:`.

A text file (`.txt`, `.md`, anything not a table or `.jsonl`) is one document; a JSONL line, a
Parquet or Arrow row (`datasets.save_to_disk` dirs are Arrow files) is one document, its text in
`text_field`. `.gz` and `.zst` are decompressed on the fly. Bytes are decoded as UTF-8 under
`encoding_errors` (strict | replace | skip), with counts. Streaming: JSONL line by line, tables
batch by batch (`formats.py`), a text file whole (so the largest single text file bounds memory).
A truncated or corrupt file is an error naming it, or under `skip` the rest of it is skipped and
counted. Cleaning is `clean.py`'s job, not this module's.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import logging
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from lmforge.data import download, formats, pydocs
from lmforge.errors import DataError

log = logging.getLogger(__name__)

EncodingErrors = Literal["strict", "replace", "skip"]
PYDOCS = "pydocs"
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".text", ".jsonl", *formats.TABLE_SUFFIXES)
COMPRESSED_SUFFIXES = (".gz", ".zst")
_MAX_SKIPPED_NAMES = 100  # names kept for stats.json; the counts are always complete
_GLOB_CHARS = set("*?[")
_FFFD = "\ufffd".encode()
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class SourceOptions:
    """How sources are read; the subset of `PrepareConfig` this module needs."""

    encoding_errors: EncodingErrors = "strict"
    text_field: str = "text"
    cache_dir: Path = Path("~/.cache/lmforge")
    pydocs_limit: int | None = None  # first N stdlib modules only, for quick tests


@dataclass(frozen=True)
class Input:
    """One concrete input after resolving specs: a file on disk, or the built-in corpus."""

    kind: Literal["file", "pydocs"]
    path: Path | None = None
    spec: str = ""

    def fingerprint(self) -> str:
        if self.kind == "pydocs":
            return f"pydocs|{pydocs.pydocs_fingerprint()}"
        assert self.path is not None
        stat = self.path.stat()
        return f"file|{self.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


@dataclass
class ReadStats:
    """What reading did: documents and bytes out, and what the encoding policy replaced/skipped."""

    files: int = 0
    documents: int = 0
    bytes: int = 0
    replaced: int = 0
    skipped_files: int = 0
    skipped_lines: int = 0
    skipped_rows: int = 0
    damaged_files: int = 0
    skipped: list[str] = field(default_factory=list)

    def skip(self, what: str) -> None:
        if len(self.skipped) < _MAX_SKIPPED_NAMES:
            self.skipped.append(what)

    def summary(self) -> str:
        parts = []
        if self.replaced:
            parts.append(f"{self.replaced} invalid bytes/NULs replaced with U+FFFD")
        if self.skipped_files:
            parts.append(f"{self.skipped_files} files skipped")
        if self.skipped_lines:
            parts.append(f"{self.skipped_lines} JSONL lines skipped")
        if self.skipped_rows:
            parts.append(f"{self.skipped_rows} table rows skipped (null text)")
        if self.damaged_files:
            parts.append(f"{self.damaged_files} truncated/corrupt files cut short")
        return "; ".join(parts)


@dataclass(frozen=True)
class Document:
    name: str  # file path, `path:line` for JSONL, `path#row` for tables, `pydocs:module`
    text: str


# -------------------------------------------------------------------------------------------------
# Resolving specs into inputs.


def resolve(specs: list[str], options: SourceOptions) -> list[Input]:
    """Expand each spec (file, dir, glob, `pydocs`, `url:`) into inputs; DataError if missing."""
    inputs: list[Input] = []
    for spec in specs:
        inputs.extend(_resolve_one(spec, options))
    return inputs


def _resolve_one(spec: str, options: SourceOptions) -> list[Input]:
    if spec == PYDOCS:
        return [Input("pydocs", spec=spec)]
    if spec.startswith(("url:", "http://", "https://")):
        url, sha256 = download.parse_url_spec(spec)
        path = download.fetch(url, options.cache_dir.expanduser(), sha256)
        return [Input("file", path, spec)]
    if _GLOB_CHARS & set(spec):
        matches = sorted(Path(p) for p in glob.glob(str(Path(spec).expanduser()), recursive=True))
        files = [f for m in matches for f in (_walk(m) if m.is_dir() else [m])]
        if not files:
            raise DataError(f"source pattern '{spec}' matched no files; check the pattern")
        return [Input("file", f, spec) for f in files]
    path = Path(spec).expanduser()
    if path.is_dir() and (saved := formats.saved_dataset_files(path)) is not None:
        return [Input("file", f, spec) for f in saved]
    if path.is_dir():
        files = _walk(path)
        if not files:
            raise DataError(
                f"source dir '{spec}' has no text files ({', '.join(TEXT_SUFFIXES)}, or .gz/.zst "
                "of them); add files or name them directly"
            )
        return [Input("file", f, spec) for f in files]
    if path.is_file():
        return [Input("file", path, spec)]
    raise DataError(
        f"source '{spec}' does not exist; give a file, a directory, a glob, 'pydocs' or url:..."
    )


def _walk(root: Path) -> list[Path]:
    """Text files under `root`, recursively and sorted; hidden files and dirs are skipped."""
    found, other = [], 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(p.startswith(".") for p in path.relative_to(root).parts):
            continue
        if _logical_suffix(path) in TEXT_SUFFIXES:
            found.append(path)
        else:
            other += 1
    if other:
        log.info(
            "source %s: skipped %d files that are not %s", root, other, "/".join(TEXT_SUFFIXES)
        )
    return found


def _logical_suffix(path: Path) -> str:
    """The suffix that says how to parse a file: `.jsonl` for `x.jsonl.gz` and `x.jsonl.zst`."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def fingerprint(inputs: list[Input]) -> str:
    """Identity of the inputs (paths, sizes, mtimes; pydocs by Python version and files)."""
    digest = hashlib.sha256()
    for item in inputs:
        digest.update(item.fingerprint().encode("utf-8") + b"\n")
    return digest.hexdigest()


# -------------------------------------------------------------------------------------------------
# Reading documents.


def iter_documents(
    inputs: list[Input], options: SourceOptions, stats: ReadStats
) -> Iterator[Document]:
    """Every document of every input, in order; updates `stats` as it goes."""
    for item in inputs:
        if item.kind == "pydocs":
            docs = (Document(n, t) for n, t in pydocs.iter_pydocs(limit=options.pydocs_limit))
        else:
            assert item.path is not None
            stats.files += 1
            docs = _guarded(item.path, _read_file(item.path, options, stats), options, stats)
        for doc in docs:
            stats.documents += 1
            stats.bytes += len(doc.text.encode("utf-8"))
            yield doc


def _read_file(path: Path, options: SourceOptions, stats: ReadStats) -> Iterator[Document]:
    suffix = _logical_suffix(path)
    if suffix in formats.TABLE_SUFFIXES:
        if path.suffix.lower() in COMPRESSED_SUFFIXES:
            raise DataError(
                f"{path}: a compressed {suffix} file is not supported ({suffix} compresses "
                "internally); decompress it"
            )
        return _read_table(path, options, stats)
    if suffix == ".jsonl":
        return _read_jsonl(path, options, stats)
    return _read_text(path, options, stats)


def _guarded(
    path: Path, docs: Iterator[Document], options: SourceOptions, stats: ReadStats
) -> Iterator[Document]:
    """`docs` of one file; damage is an error, or under `skip` ends the file (counted)."""
    try:
        yield from docs
    except (formats.FormatDamage, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        message = (
            str(exc)
            if isinstance(exc, formats.FormatDamage)
            else (f"{path} is not a valid gzip file or is truncated ({exc})")
        )
        if options.encoding_errors != "skip":
            raise DataError(
                f"{message}; re-download or re-create it, or set encoding_errors=skip to skip "
                "what cannot be read"
            ) from None
        log.warning("%s; skipping the rest of it", message)
        stats.damaged_files += 1
        stats.skip(f"{path} (damaged)")


def _open_binary(path: Path) -> IO[bytes]:
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".zst":
        return formats.open_zstd(path)
    return open(path, "rb")


def _read_text(path: Path, options: SourceOptions, stats: ReadStats) -> Iterator[Document]:
    with _open_binary(path) as f:
        data = f.read()
    text = decode_bytes(data, str(path), options.encoding_errors, stats)
    if text is None:
        stats.skipped_files += 1
        stats.skip(str(path))
        return
    yield Document(str(path), text.removeprefix("\ufeff"))


def decode_bytes(data: bytes, where: str, policy: EncodingErrors, stats: ReadStats) -> str | None:
    """UTF-8 text of `data` under `policy`; None means skip. NUL bytes count as binary."""
    nul = data.find(b"\0")
    if nul != -1:
        if policy == "strict":
            raise DataError(
                f"{where} contains a NUL byte at offset {nul}, so it looks binary; remove it from "
                "the sources or set encoding_errors=skip (or replace)"
            )
        if policy == "skip":
            return None
        stats.replaced += data.count(b"\0")
        data = data.replace(b"\0", _FFFD)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if policy == "strict":
            raise DataError(
                f"{where} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                "convert it to UTF-8 or set encoding_errors=replace (or skip)"
            ) from None
        if policy == "skip":
            return None
    text = data.decode("utf-8", errors="replace")
    # Each invalid byte run became one U+FFFD; U+FFFD already in the file is not counted.
    stats.replaced += text.count("\ufffd") - data.count(_FFFD)
    return text


def _read_jsonl(path: Path, options: SourceOptions, stats: ReadStats) -> Iterator[Document]:
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path} line {lineno}"
            line = decode_bytes(raw, where, options.encoding_errors, stats)
            if line is None:
                stats.skipped_lines += 1
                continue
            text = _jsonl_text(line, where, options, stats)
            if text is None:
                stats.skipped_lines += 1
                continue
            yield Document(f"{path}:{lineno}", text)


def _read_table(path: Path, options: SourceOptions, stats: ReadStats) -> Iterator[Document]:
    """One document per row of a Parquet/Arrow file; the text column may be string or binary."""
    for row, value in formats.iter_table_texts(path, options.text_field):
        where = f"{path} row {row}"
        if formats.is_missing(value):
            raise DataError(
                f"{where} has no field '{options.text_field}'; set text_field to a text field"
            )
        if value is None:
            if options.encoding_errors != "skip":
                raise DataError(
                    f"{where}: field '{options.text_field}' is null; drop such rows or set "
                    "encoding_errors=skip"
                )
            stats.skipped_rows += 1
            continue
        if isinstance(value, bytes):
            value = decode_bytes(value, where, options.encoding_errors, stats)
            if value is None:
                stats.skipped_rows += 1
                continue
        if not isinstance(value, str):
            raise DataError(
                f"{where}: field '{options.text_field}' is {type(value).__name__}, not a string; "
                "set text_field to a text column"
            )
        text = _fix_surrogates(value, where, options.encoding_errors, stats)
        if text is None:
            stats.skipped_rows += 1
            continue
        yield Document(f"{path}#{row}", text)


def _jsonl_text(line: str, where: str, options: SourceOptions, stats: ReadStats) -> str | None:
    """The text field of one JSONL line; DataError naming the line when it is malformed."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{where} is not valid JSON ({exc.msg} at column {exc.colno}); fix or delete that line"
        ) from None
    value = _field(record, options.text_field)
    if value is _MISSING:
        keys = ", ".join(list(record)[:8]) if isinstance(record, dict) else type(record).__name__
        raise DataError(
            f"{where} has no field '{options.text_field}' (found: {keys}); set text_field=NAME"
        )
    if not isinstance(value, str):
        raise DataError(
            f"{where}: field '{options.text_field}' is {type(value).__name__}, not a string; "
            "set text_field to a text field"
        )
    return _fix_surrogates(value, where, options.encoding_errors, stats)


_MISSING = object()


def _field(record: Any, dotted: str) -> Any:
    """`record["a"]["b"]` for `dotted = "a.b"`, or _MISSING."""
    for part in dotted.split("."):
        if not isinstance(record, dict) or part not in record:
            return _MISSING
        record = record[part]
    return record


def _fix_surrogates(text: str, where: str, policy: EncodingErrors, stats: ReadStats) -> str | None:
    """JSON may escape lone surrogates (`\\ud800`), which no UTF-8 file can hold."""
    found = _SURROGATE.search(text)
    if found is None:
        return text
    if policy == "strict":
        raise DataError(
            f"{where} has an unpaired surrogate escape at character {found.start()}; fix it or "
            "set encoding_errors=replace (or skip)"
        )
    if policy == "skip":
        return None
    text, count = _SURROGATE.subn("\ufffd", text)
    stats.replaced += count
    return text
