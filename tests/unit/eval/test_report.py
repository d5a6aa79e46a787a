"""Reports: flat JSON headline keys, side-by-side Markdown tables, confusion-matrix PNG."""

from __future__ import annotations

import json

from lmforge.eval.report import markdown_table, save_confusion_png, write_report


def test_side_by_side_table_has_a_column_per_run():
    table = markdown_table(
        {"runs/a": {"acc": 0.5, "n": 10}, "runs/b": {"acc": 0.75, "macro_f1": 0.7}}, title="sst2"
    )
    lines = table.splitlines()
    assert lines[0] == "| sst2 | runs/a | runs/b |"
    assert "| acc | 0.5000 | 0.7500 |" in lines
    assert "| n | 10 | - |" in lines
    assert "| macro_f1 | - | 0.7000 |" in lines


def test_write_report_keeps_headline_keys_flat(tmp_path, caplog):
    with caplog.at_level("INFO", logger="lmforge.eval.report"):
        path = write_report(tmp_path, "sst2", {"acc": 0.8, "task": "sst2"}, {"matrix": [[1]]})
    assert f"wrote {path} and sst2.md" in caplog.text  # the user learns where the report is
    saved = json.loads(path.read_text())
    assert saved["acc"] == 0.8 and saved["task"] == "sst2"
    assert saved["details"] == {"matrix": [[1]]}
    assert (tmp_path / "eval" / "sst2.md").read_text().startswith("# sst2")
    assert not list((tmp_path / "eval").glob("*.tmp*"))


def test_confusion_png(tmp_path):
    path = save_confusion_png([[3, 1], [0, 4]], ["neg", "pos"], tmp_path / "c.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
