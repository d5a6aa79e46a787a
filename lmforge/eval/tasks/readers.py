"""Readers for labelled text files: `<label> <text>` lines, JSONL and CSV.

Each returns `Row(label, text, line)` in file order; `label_ids` maps raw labels to class ids.
Every problem is a one-line DataError naming the file, the line and the fix: an empty file, a
malformed line, invalid JSON, a missing field, or a label the task does not know.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from lmforge.errors import ConfigError, DataError


class Row(NamedTuple):
    """One labelled example as read: the label as written, the text, its line in the file."""

    label: str
    text: str
    line: int


def detect_format(path: Path, fmt: str) -> str:
    """`auto` picks jsonl for .jsonl/.json, csv for .csv/.tsv, else the `<label> <text>` lines."""
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    return "lines"


def read_labelled(
    path: str | Path, fmt: str = "auto", text_field: str = "text", label_field: str = "label"
) -> list[Row]:
    """All labelled rows of a file; DataError if it is unreadable, malformed or empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"task file {path} does not exist; check the path")
    kind = detect_format(path, fmt)
    try:
        if kind == "lines":
            rows = _read_lines(path)
        elif kind == "jsonl":
            rows = _read_jsonl(path, text_field, label_field)
        elif kind == "csv":
            rows = _read_csv(path, text_field, label_field)
        else:
            raise ConfigError(f"task.format '{fmt}' is not one of auto, lines, jsonl, csv")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason}); re-encode it as UTF-8") from None
    if not rows:
        raise DataError(f"{path} has no examples; expected {_describe(kind)}")
    return rows


def _describe(kind: str) -> str:
    return {
        "lines": "one '<label> <text>' per line",
        "jsonl": "one JSON object per line with text and label fields",
        "csv": "a CSV file with a header row naming the text and label columns",
    }[kind]


def _read_lines(path: Path) -> list[Row]:
    rows: list[Row] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue  # blank lines (often a trailing one) separate nothing
            label, _, text = line.partition(" ")
            text = text.strip()
            if not text:
                shown = line if len(line) <= 60 else line[:57] + "..."
                raise DataError(
                    f"{path} line {number}: expected '<label> <text>', got {shown!r}; "
                    "put the label, one space, then the text"
                )
            rows.append(Row(label, text, number))
    return rows


def _read_jsonl(path: Path, text_field: str, label_field: str) -> list[Row]:
    rows: list[Row] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {number}: invalid JSON ({exc.msg})") from None
            rows.append(_fields(record, path, number, text_field, label_field))
    return rows


def _read_csv(path: Path, text_field: str, label_field: str) -> list[Row]:
    rows: list[Row] = []
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if reader.fieldnames is None:
            return rows
        missing = [k for k in (text_field, label_field) if k not in reader.fieldnames]
        if missing:
            raise DataError(
                f"{path}: header {reader.fieldnames} lacks column(s) {missing}; "
                "rename them or set task.text_field=... task.label_field=..."
            )
        for record in reader:
            rows.append(_fields(record, path, reader.line_num, text_field, label_field))
    return rows


def _fields(record: object, path: Path, number: int, text_field: str, label_field: str) -> Row:
    if not isinstance(record, dict):
        raise DataError(
            f"{path} line {number}: expected a JSON object, got {type(record).__name__}"
        )
    for key in (text_field, label_field):
        if record.get(key) is None or str(record[key]).strip() == "":
            raise DataError(
                f"{path} line {number}: missing or empty field '{key}'; "
                f"set task.text_field/task.label_field if the file names them differently"
            )
    return Row(str(record[label_field]).strip(), str(record[text_field]).strip(), number)


def sort_labels(raw_labels: Sequence[str]) -> list[str]:
    """Distinct labels, numerically sorted when all are integers, else alphabetically."""
    distinct = set(raw_labels)
    if all(_is_int(label) for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def label_ids(rows: Sequence[Row], labels: Sequence[str], path: str | Path) -> list[int]:
    """Class ids of `rows` under `labels`; DataError naming the first unknown label and its row."""
    index = {label: i for i, label in enumerate(labels)}
    ids = []
    for row in rows:
        if row.label not in index:
            known = ", ".join(labels)
            raise DataError(
                f"{path} line {row.line}: unknown label {row.label!r} (known labels: {known}); "
                "fix the file or list every label in task.labels"
            )
        ids.append(index[row.label])
    return ids
