"""Every benchmark table in docs/ is rendered from a committed result, and each result says what
it ran on: a docs table that drifts from its JSON, or a result without its machine, fails here."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import pytest
from lmforge_testing import REPO_ROOT


@functools.cache  # one module object for every test: it is loaded from its file
def _results_io():
    spec = importlib.util.spec_from_file_location(
        "results_io", REPO_ROOT / "benchmarks" / "results_io.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blocks() -> list[tuple[Path, str, str, str]]:
    found = []
    for page in sorted((REPO_ROOT / "docs").glob("*.md")):
        for match in _results_io().BLOCK.finditer(page.read_text(encoding="utf-8")):
            found.append((page, match.group(2), match.group(3), match.group(4)))
    return found


@pytest.mark.parametrize("page", sorted((REPO_ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_every_results_marker_opens_one_block(page):
    text = page.read_text(encoding="utf-8")
    blocks = len(_results_io().BLOCK.findall(text))
    assert text.count("<!-- results: ") == blocks == text.count("<!-- /results -->"), (
        f"{page.name}: a results marker without its end marker (or one inside another block)"
    )


@pytest.mark.parametrize("block", _blocks(), ids=lambda b: f"{b[0].name}:{b[1]}#{b[2]}")
def test_docs_table_equals_its_result(block):
    page, result, name, text = block
    path = REPO_ROOT / "benchmarks" / "results" / result
    assert path.is_file(), f"{page.name} shows {result}#{name}, which is not committed"
    tables = json.loads(path.read_text(encoding="utf-8"))["tables"]
    assert name in tables, f"{result} has no table '{name}' (has: {sorted(tables)})"
    rendered = _results_io().render(tables[name])
    assert text.strip() == rendered, (
        f"{page.name}'s table {result}#{name} differs from its JSON; paste:\n{rendered}"
    )


@pytest.mark.parametrize(
    "path",
    sorted((REPO_ROOT / "benchmarks" / "results").glob("*.json")),
    ids=lambda p: p.name,
)
def test_every_result_names_its_machine(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [k for k in _results_io().REQUIRED_KEYS if k not in data]
    assert not missing, f"{path.name} lacks {missing}"
    assert {"model", "family", "flags"} <= set(data["cpu"]), path.name


def test_the_renderer_is_exact():
    io = _results_io()
    spec = io.table(
        [["mode", "mode", ""], ["tok/s", "rate", ",.0f"]], [{"mode": "a", "rate": 1234.5}]
    )
    assert io.render(spec) == "| mode | tok/s |\n|---|---|\n| a | 1,234 |"
