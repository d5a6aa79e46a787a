"""Reading runs for a fit: tables, sweep dirs, derived D and C, exclusions and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmforge.errors import ConfigError, DataError
from lmforge.lab.fit_table import (
    Columns,
    check_enough,
    default_out_dir,
    exclude_points,
    points_from_rows,
    read_rows,
)


def _write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_csv_with_compute_only_derives_tokens(tmp_path):
    path = _write_csv(tmp_path / "runs.csv", ["size", "flops", "loss"], [[1e6, 6e12, 3.0]] * 3)
    rows, skipped = read_rows(path)
    points = points_from_rows(rows, Columns(n="size", c="flops"), "total", str(path))
    assert skipped == []
    np.testing.assert_allclose(points.d, 1e6)  # C / (6 N)
    np.testing.assert_allclose(points.c, 6e12)
    assert points.used == {
        "n": "size",
        "n_kind": "total",
        "loss": "loss",
        "d": "flops / (6 * size)",
        "c": "flops",
    }
    assert points.names == ["row 1", "row 2", "row 3"]


def test_jsonl_with_tokens_only_estimates_compute(tmp_path):
    path = tmp_path / "runs.jsonl"
    lines = [
        {"name": f"r{i}", "N": 2e6 * (i + 1), "D": 1e8, "loss": 3.0 - i / 10} for i in range(3)
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    rows, _ = read_rows(path)
    points = points_from_rows(rows, Columns(), "total", str(path))
    assert points.names == ["r0", "r1", "r2"]
    np.testing.assert_allclose(points.c, 6 * points.n * points.d)
    assert points.used["d"] == "D" and points.used["c"] == "6 * N * D"


def test_sweep_dir_uses_done_points_and_n_kind(tmp_path):
    points = [
        {
            "name": "s1",
            "run_dir": "runs/s1",
            "status": "done",
            "N": 3e6,
            "N_non_embedding": 2e6,
            "N_non_embedding_with_head": 2.5e6,
            "D": 1e8,
            "C": 2e15,
            "loss": 3.1,
        },
        {
            "name": "s2",
            "run_dir": "runs/s2",
            "status": "failed",
            "N": 5e6,
            "N_non_embedding": 4e6,
            "N_non_embedding_with_head": 4.5e6,
            "D": 1e8,
            "C": 3e15,
            "loss": None,
        },
    ]
    (tmp_path / "sweep.json").write_text(json.dumps({"format_version": 1, "points": points}))
    rows, skipped = read_rows(tmp_path)
    assert skipped == ["s2"]
    fit_points = points_from_rows(rows, Columns(), "non_embedding", "sweep")
    assert fit_points.n.tolist() == [2e6] and fit_points.c.tolist() == [2e15]
    assert fit_points.used["n"] == "N_non_embedding"
    assert default_out_dir(tmp_path) == tmp_path
    assert default_out_dir(tmp_path / "a" / "runs.csv") == tmp_path / "a" / "runs.fit"


def test_missing_column_names_the_columns_present(tmp_path):
    path = _write_csv(tmp_path / "t.csv", ["Model Size", "Training FLOP", "loss"], [[1, 2, 3]])
    rows, _ = read_rows(path)
    with pytest.raises(
        DataError,
        match=r"no column 'N' \(columns.n\); columns present: "
        r"Model Size, Training FLOP, loss",
    ):
        points_from_rows(rows, Columns(), "total", str(path))
    with pytest.raises(DataError, match="no column 'flop' .columns.c."):
        points_from_rows(rows, Columns(n="Model Size", c="flop"), "total", str(path))


def test_neither_tokens_nor_compute_is_refused(tmp_path):
    path = _write_csv(tmp_path / "t.csv", ["N", "loss"], [[1e6, 3.0]])
    rows, _ = read_rows(path)
    with pytest.raises(DataError, match="neither a tokens column"):
        points_from_rows(rows, Columns(), "total", str(path))


@pytest.mark.parametrize("bad", ["0", "-2.5", "nan", "inf", "abc", ""])
def test_non_positive_or_non_numeric_values_are_refused(tmp_path, bad):
    path = _write_csv(tmp_path / "t.csv", ["N", "D", "loss"], [[1e6, 1e8, 3.0], [1e6, 1e8, bad]])
    rows, _ = read_rows(path)
    with pytest.raises(DataError, match=r"row 2 has loss = .*positive finite"):
        points_from_rows(rows, Columns(), "total", str(path))


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_rows(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="without sweep.json"):
        read_rows(tmp_path)
    (tmp_path / "t.parquet").write_text("x")
    with pytest.raises(ConfigError, match=r"\.csv or \.jsonl"):
        read_rows(tmp_path / "t.parquet")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text(json.dumps({"format_version": 9, "points": []}))
    with pytest.raises(DataError, match="format_version 9"):
        read_rows(tmp_path / "s")
    (tmp_path / "bad.jsonl").write_text('{"N": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match="line 2 is a list"):
        read_rows(tmp_path / "bad.jsonl")


def test_exclusions_and_too_few_rows(tmp_path):
    n = np.array([5e4, 2e5, 3e5, 4e5, 5e5, 6e5, 7e5, 8e5])
    rows = [{"N": x, "D": 1e8, "loss": 3.0 + i / 10} for i, x in enumerate(n)]
    points = points_from_rows(rows, Columns(), "total", "t")
    assert points.small.tolist() == [True] + [False] * 7
    assert [r["small"] for r in points.records()][:2] == [True, False]
    kept, removed, dropped = exclude_points(points, exclude_small=True, exclude_highest_loss=2)
    assert removed.names == ["row 1", "row 7", "row 8"]
    assert kept.names == [f"row {i}" for i in range(2, 7)]
    assert [d["name"] for d in dropped] == ["row 1", "row 7", "row 8"]
    with pytest.raises(DataError, match="leaves 5 runs to fit; .* at least 6"):
        check_enough(kept, "t")
    check_enough(points, "t")
