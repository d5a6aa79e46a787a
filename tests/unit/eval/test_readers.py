"""Labelled-file readers: the three formats, and one-line errors for bad files."""

from __future__ import annotations

import pytest

from lmforge.errors import DataError
from lmforge.eval.tasks.readers import label_ids, read_labelled, sort_labels


def test_lines_jsonl_and_csv_read_the_same_rows(tmp_path):
    (tmp_path / "a.txt").write_text("1 good film\n0 bad , bad film\n\n", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text(
        '{"text": "good film", "label": 1}\n{"text": "bad , bad film", "label": "0"}\n'
    )
    (tmp_path / "a.csv").write_text('label,text\n1,good film\n0,"bad , bad film"\n')
    expected = [("1", "good film"), ("0", "bad , bad film")]
    for name in ("a.txt", "a.jsonl", "a.csv"):
        rows = read_labelled(tmp_path / name)
        assert [(r.label, r.text) for r in rows] == expected, name


def test_custom_fields(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"sentence": "hi", "y": "pos"}\n')
    rows = read_labelled(path, text_field="sentence", label_field="y")
    assert (rows[0].label, rows[0].text) == ("pos", "hi")


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n")
    with pytest.raises(DataError, match="has no examples"):
        read_labelled(path)


def test_malformed_line_names_its_number(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1 fine\n0 also fine\nnolabel\n")
    with pytest.raises(DataError, match=r"bad.txt line 3: expected '<label> <text>'"):
        read_labelled(path)


def test_bad_json_and_missing_field_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b"\n')
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        read_labelled(path)
    path.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(DataError, match="line 2: missing or empty field 'label'"):
        read_labelled(path)


def test_csv_without_the_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("sentence,y\nhi,1\n")
    with pytest.raises(DataError, match="lacks column"):
        read_labelled(path)


def test_unknown_label_names_line_and_known_labels(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("0 x\n1 y\n\n7 z\n")
    rows = read_labelled(path)
    with pytest.raises(DataError, match=r"line 4: unknown label '7' \(known labels: 0, 1\)"):
        label_ids(rows, ["0", "1"], path)
    assert label_ids(rows[:2], ["0", "1"], path) == [0, 1]


def test_error_messages_are_one_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("x\n")
    with pytest.raises(DataError) as info:
        read_labelled(path)
    assert "\n" not in str(info.value)


def test_sort_labels_is_numeric_when_possible():
    assert sort_labels(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert sort_labels(["pos", "neg"]) == ["neg", "pos"]
