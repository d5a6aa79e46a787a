"""The blocks a report is made of (a `Part`: a heading and its text, tables, images) and
reading the JSON-lines files reports draw from; rendering is `report.py`'s job."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Image:
    name: str  # file name in report_files/, e.g. "loss.png"
    png: bytes
    alt: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]


@dataclass
class Pre:
    text: str


@dataclass
class Part:
    """A section of the report: a heading and its blocks (str paragraphs, Table, Pre, Image)."""

    title: str
    blocks: list[Any] = field(default_factory=list)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file, skipping a torn last line (an interrupted writer)."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
