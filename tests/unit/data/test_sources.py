"""Sources: files, dirs, globs, JSONL, gzip, pydocs; encoding policies and one-line errors."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from lmforge.data import pydocs, sources
from lmforge.data.sources import ReadStats, SourceOptions
from lmforge.errors import DataError


def _read(specs: list[str], **options) -> tuple[list[sources.Document], ReadStats]:
    opts = SourceOptions(**options)
    stats = ReadStats()
    docs = list(sources.iter_documents(sources.resolve(specs, opts), opts, stats))
    return docs, stats


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n", encoding="utf-8")
    (root / "sub" / "b.md").write_text("# beta", encoding="utf-8")
    (root / "sub" / "c.jsonl").write_text('{"text": "gamma"}\n\n{"text": "delta"}\n')
    with gzip.open(root / "d.txt.gz", "wt", encoding="utf-8") as f:
        f.write("epsilon")
    (tmp_path / "nested").mkdir()
    with gzip.open(tmp_path / "nested" / "e.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"body": {"text": "zeta"}}) + "\n")
    (root / "skip.bin").write_bytes(b"\x00\x01")
    (root / ".hidden.txt").write_text("hidden")
    return root


def test_dir_is_recursive_sorted_and_typed(corpus):
    docs, stats = _read([str(corpus)])
    assert [d.text for d in docs] == ["alpha\n", "epsilon", "# beta", "gamma", "delta"]
    assert stats.files == 4 and stats.documents == 5  # skip.bin and .hidden.txt are not read


def test_jsonl_nested_field_and_gzip(corpus):
    docs, _ = _read([str(corpus.parent / "nested")], text_field="body.text")
    assert [d.text for d in docs] == ["zeta"]
    docs, stats = _read([str(corpus / "sub" / "c.jsonl")])
    assert [d.text for d in docs] == ["gamma", "delta"]
    assert docs[1].name.endswith("c.jsonl:3") and stats.documents == 2


def test_glob_and_explicit_files(corpus):
    docs, stats = _read([str(corpus / "**" / "*.md"), str(corpus / "a.txt")])
    assert [d.text for d in docs] == ["# beta", "alpha\n"]
    assert stats.files == 2 and stats.bytes == len("# beta") + len("alpha\n")


def test_missing_sources_name_the_path(tmp_path):
    with pytest.raises(DataError, match="source '.*nope.txt' does not exist"):
        _read([str(tmp_path / "nope.txt")])
    with pytest.raises(DataError, match="matched no files"):
        _read([str(tmp_path / "*.txt")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no text files"):
        _read([str(tmp_path / "empty")])


def test_encoding_policies_strict_replace_skip(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café ok \ufffd".encode() + b" \xe9t\xe9")
    with pytest.raises(DataError, match=r"not valid UTF-8 \(byte 0xe9 at offset 13\).*replace"):
        _read([str(bad)])
    docs, stats = _read([str(bad)], encoding_errors="replace")
    assert docs[0].text == "café ok \ufffd \ufffdt\ufffd" and stats.replaced == 2
    docs, stats = _read([str(bad)], encoding_errors="skip")
    assert docs == [] and stats.skipped_files == 1


def test_binary_nul_files(tmp_path):
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"ab\x00cd\x00")
    with pytest.raises(DataError, match="NUL byte at offset 2, so it looks binary"):
        _read([str(binary)])
    docs, stats = _read([str(binary)], encoding_errors="replace")
    assert docs[0].text == "ab\ufffdcd\ufffd" and stats.replaced == 2
    _, stats = _read([str(binary)], encoding_errors="skip")
    assert stats.skipped_files == 1 and "1 files skipped" in stats.summary()


def test_bad_jsonl_lines_give_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"d.jsonl line 2 is not valid JSON"):
        _read([str(path)])
    path.write_text('{"text": "ok"}\n\n{"title": "x", "body": "y"}\n')
    with pytest.raises(DataError, match=r"line 3 has no field 'text' \(found: title, body\)"):
        _read([str(path)])
    path.write_text('{"text": 5}\n')
    with pytest.raises(DataError, match="line 1: field 'text' is int, not a string"):
        _read([str(path)])
    path.write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n{"text": "\\ud800x"}\n')
    with pytest.raises(DataError, match="line 2 is not valid UTF-8"):
        _read([str(path)])
    docs, stats = _read([str(path)], encoding_errors="skip")
    assert [d.text for d in docs] == ["a"] and stats.skipped_lines == 2
    docs, stats = _read([str(path)], encoding_errors="replace")
    assert [d.text for d in docs] == ["a", "\ufffd", "\ufffdx"] and stats.replaced == 2


def test_bad_gzip(tmp_path):
    path = tmp_path / "x.txt.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a valid gzip file"):
        _read([str(path)])


def test_pydocs_is_parsed_not_imported():
    before = set(sys.modules)
    docs = list(pydocs.iter_pydocs(limit=5))
    assert len(docs) >= 3 and all(name.startswith("pydocs:") for name, _ in docs)
    assert not {"antigravity", "this", "aifc", "turtle"} & (set(sys.modules) - before)
    topics = dict(pydocs.topic_documents())
    assert "assert" in topics and 'The "assert" statement' in topics["assert"]
    files = pydocs.module_files()
    names = {pydocs.module_name(f, pydocs.stdlib_dir()) for f in files}
    assert "json" in names and "collections.abc" in names
    assert not any(n.startswith(("test.", "idlelib", "_")) for n in names - {"__future__"})
    assert "antigravity" not in names and "this" not in names


def test_pydocs_document_format():
    source = '''"""Module doc."""
def public(a, b=1):
    """Does things."""
def _private():
    """Hidden."""
class Thing:
    """A thing."""
    def method(self):
        """Method doc."""
'''
    text = pydocs.module_document(source, "mod")
    assert text == (
        "mod\n\nModule doc.\n\nmod.public(a, b=1)\n\nDoes things.\n\nmod.Thing\n\nA thing."
        "\n\nmod.Thing.method(self)\n\nMethod doc."
    )
    assert pydocs.module_document("def broken(:\n", "m") == ""
