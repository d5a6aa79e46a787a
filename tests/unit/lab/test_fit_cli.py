"""`lmforge fit` end to end: a CSV, a JSONL table and a sweep dir in, fit.json and plots out."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _fit_support import TRUE, isoflop_runs, synthetic_grid

from lmforge.cli import main
from lmforge.lab.fit_approach3 import Approach3Result
from lmforge.lab.fit_isoflop import Approach2Result
from lmforge.lab.fit_verb import _compare

FAST = ["starts=30", "bootstrap=20", "workers=1"]
PLOTS = {"fit_loss_vs_compute.png", "fit_parity.png", "fit_isoflop.png", "fit_optimal.png"}


def _isoflop_table() -> dict[str, np.ndarray]:
    runs = isoflop_runs([1e16, 1e17, 1e18, 1e19])
    noise = np.exp(0.002 * np.random.default_rng(0).standard_normal(runs["loss"].size))
    return {**runs, "loss": runs["loss"] * noise}


def _check_fit_json(path, n_runs, plots=PLOTS):
    report = json.loads(path.read_text())
    for key in ("E", "A", "B", "alpha", "beta", "a", "b"):
        assert isinstance(report[key], float)
        lo, hi = report[f"{key}_ci"]
        assert lo <= report[key] <= hi
    assert report["a"] + report["b"] == pytest.approx(1.0)
    assert report["converged"] is True
    assert report["n_runs"] == len(report["points"]) == n_runs
    assert {"name", "N", "D", "C", "loss", "small"} <= set(report["points"][0])
    assert set(report["plots"]) == {f"plots/{p}" for p in plots}
    for plot in report["plots"]:
        assert (path.parent / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return report


def test_fit_a_csv_table(tmp_path, capsys):
    g = synthetic_grid(seed=1)
    path = tmp_path / "runs.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["params", "flops", "val loss"])
        writer.writerows(zip(g["N"], g["C"], g["loss"], strict=True))
    code = main(
        ["fit", str(path), "columns.n=params", "columns.c=flops", "columns.loss=val loss"] + FAST
    )
    assert code == 0
    # A grid of N x D has no IsoFLOP profiles: Approach 2 says so and draws no parabolas.
    report = _check_fit_json(tmp_path / "runs.fit" / "fit.json", 49, PLOTS - {"fit_isoflop.png"})
    assert report["approaches_agree"] is None and "Approach 2 not fitted" in report["notes"][0]
    assert report["used"]["d"] == "flops / (6 * params)"
    assert abs(report["alpha"] - TRUE["alpha"]) < 0.02
    out = capsys.readouterr().out
    assert "Approach 3 on 49 runs" in out and "runs.fit/fit.json" in out


def test_fit_a_jsonl_table_into_out(tmp_path):
    runs = _isoflop_table()
    path = tmp_path / "runs.jsonl"
    path.write_text(
        "".join(
            json.dumps({"name": f"p{i}", "N": n, "D": d, "C": c, "loss": loss}) + "\n"
            for i, (n, d, c, loss) in enumerate(
                zip(*(runs[k] for k in ("N", "D", "C", "loss")), strict=True)
            )
        )
    )
    assert main(["fit", str(path), f"out={tmp_path / 'o'}", *FAST]) == 0
    report = _check_fit_json(tmp_path / "o" / "fit.json", 28)
    a2 = report["approach2"]
    assert len(a2["budgets"]) == 4 and all(b["used"] for b in a2["budgets"])
    assert abs(a2["a"] - TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])) < 0.03
    assert report["approaches_agree"] is True  # noise-free profiles: both recover the law


def test_fit_a_sweep_dir(tmp_path):
    runs = _isoflop_table()
    points = []
    for i, (n, d, c, loss) in enumerate(
        zip(*(runs[k] for k in ("N", "D", "C", "loss")), strict=True)
    ):
        points.append(
            {
                "name": f"s{i}",
                "run_dir": f"runs/s{i}",
                "status": "done",
                "N": n * 1.3,
                "N_non_embedding": n,
                "N_non_embedding_with_head": n * 1.1,
                "D": d,
                "C": c,
                "loss": loss,
            }
        )
    points.append({"name": "late", "run_dir": "runs/late", "status": "running", "N": 1e6})
    (tmp_path / "sweep.json").write_text(json.dumps({"format_version": 1, "points": points}))
    assert main(["fit", str(tmp_path), "n_kind=non_embedding", *FAST]) == 0
    report = _check_fit_json(tmp_path / "fit.json", 28)
    assert report["source_kind"] == "sweep" and report["skipped"] == ["late"]
    assert report["used"]["n"] == "N_non_embedding" and report["used"]["c"] == "C"
    assert report["points"][0]["N"] == runs["N"][0]


def test_small_models_are_flagged_and_can_be_excluded(tmp_path):
    g = synthetic_grid(seed=2)
    path = tmp_path / "t.csv"
    rows = [["N", "D", "loss"]] + [
        [n, d, x] for n, d, x in zip(g["N"], g["D"], g["loss"], strict=True)
    ]
    rows.append([5e4, 1e9, 5.0])  # a tiny model, off the law
    path.write_text("".join(",".join(map(str, r)) + "\n" for r in rows))
    assert main(["fit", str(path), "plots=false", *FAST]) == 0
    report = json.loads((tmp_path / "t.fit" / "fit.json").read_text())
    assert report["small_runs"] == 1 and any("100000 parameters" in n for n in report["notes"])
    assert main(["fit", str(path), "plots=false", "exclude_small=true", *FAST]) == 0
    report = json.loads((tmp_path / "t.fit" / "fit.json").read_text())
    assert report["small_runs"] == 0 and report["n_runs"] == 49
    assert report["excluded"] == [
        {"name": "row 50", "reason": "under 100000 parameters (exclude_small)"}
    ]


def test_errors_print_one_line(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("Model Size,loss\n1e6,3\n")
    assert main(["fit", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "no column 'N' (columns.n); columns present: Model Size, loss" in err
    path.write_text("N,D,loss\n" + "1e6,1e8,3\n" * 4)
    assert main(["fit", str(path)]) == 2
    assert "leaves 4 runs to fit" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["fit", str(path), "ci=1.5"]) == 2
    assert "ci" in capsys.readouterr().err


def test_disagreeing_approaches_are_reported():
    a3 = Approach3Result(
        params=np.array([6.0, 7.0, 0.6, 0.3, 0.3]),
        objective=0.0,
        converged=True,
        message="",
        starts=1,
        starts_converged=1,
    )
    a2 = Approach2Result(budgets=[], step=0.1, a=0.7, b=0.3, a_ci=(0.65, 0.75), b_ci=(0.25, 0.35))
    agree, notes = _compare(a3, a2, {"a": (0.45, 0.55), "b": (0.45, 0.55)})
    assert agree is False and len(notes) == 2
    assert "disagree on a" in notes[0] and "do not overlap" in notes[0]
    agree, notes = _compare(a3, a2, {"a": (0.45, 0.66), "b": (0.34, 0.55)})
    assert agree is True and notes == []
