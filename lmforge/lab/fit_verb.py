"""`lmforge fit SOURCE [out=DIR]`: scaling laws from a sweep dir or a table of runs.

Reads the runs (`fit_table`), fits Approach 3 (`fit_approach3`) and Approach 2 (`fit_isoflop`),
says where they disagree, and writes `DIR/fit.json` and `DIR/plots/fit_*.png` (`fit_plots`).
`fit_source(config)` is the library entry point; `fit_config` holds the keys and the CLI verb.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from lmforge.lab.fit_approach3 import Approach3Result, default_workers, fit_approach3
from lmforge.lab.fit_config import FitConfig
from lmforge.lab.fit_isoflop import Approach2Result, fit_approach2
from lmforge.lab.fit_table import (
    SMALL_N,
    SWEEP_FILE,
    Columns,
    FitPoints,
    check_enough,
    default_out_dir,
    exclude_points,
    points_from_rows,
    read_rows,
)
from lmforge.verb import Flags

log = logging.getLogger(__name__)

FIT_FILE = "fit.json"
FIT_FORMAT_VERSION = 1
_PARAMS = ("E", "A", "B", "alpha", "beta", "a", "b")


def fit_source(config: FitConfig) -> dict[str, Any]:
    """Fit the runs of `config.source`; writes fit.json (and plots) and returns its contents."""
    started = time.perf_counter()
    source = Path(config.source)
    rows, skipped = read_rows(source)
    where = str(source / SWEEP_FILE) if source.is_dir() else str(source)
    columns = Columns(**config.columns.model_dump())
    everything = points_from_rows(rows, columns, config.n_kind, where)
    points, excluded, dropped = exclude_points(
        everything, config.exclude_small, config.exclude_highest_loss
    )
    check_enough(points, where)
    workers = config.workers or default_workers()
    log.info("fitting %d runs from %s (%d workers)", len(points), source, workers)
    approach3 = fit_approach3(
        points.n,
        points.d,
        points.loss,
        delta=config.huber_delta,
        starts=config.starts,
        bootstrap=config.bootstrap,
        ci=config.ci,
        seed=config.seed,
        workers=workers,
    )
    with threadpool_limits(limits=1, user_api="blas"):  # tiny least-squares fits: no threads
        approach2 = fit_approach2(
            points.n,
            points.d,
            points.c,
            points.loss,
            step=config.isoflop_step,
            bootstrap=config.bootstrap,
            ci=config.ci,
            seed=config.seed,
        )
    out_dir = Path(config.out) if config.out else default_out_dir(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = _report(config, source, points, dropped, skipped, approach3, approach2)
    if config.plots:
        paths = _plots(out_dir, points, excluded, approach3, approach2)
        report["plots"] = [str(p.relative_to(out_dir)) for p in paths]
    report["seconds"] = round(time.perf_counter() - started, 2)
    _write_json(out_dir / FIT_FILE, report)
    report["path"] = str(out_dir / FIT_FILE)
    return report


def _plots(out_dir: Path, *args: Any) -> list[Path]:
    from lmforge.lab.fit_plots import write_plots  # matplotlib only when plots are wanted

    return write_plots(out_dir, *args)


def _report(
    config: FitConfig,
    source: Path,
    points: FitPoints,
    dropped: list[dict[str, str]],
    skipped: list[str],
    a3: Approach3Result,
    a2: Approach2Result,
) -> dict[str, Any]:
    values, intervals = a3.values(), a3.intervals()
    report: dict[str, Any] = {"format_version": FIT_FORMAT_VERSION}
    for key in _PARAMS:
        report[key] = values[key]
        report[f"{key}_ci"] = list(intervals[key]) if key in intervals else None
    report["converged"] = a3.converged
    report["ci"] = config.ci
    report["source"] = str(source)
    report["source_kind"] = "sweep" if source.is_dir() else "table"
    report["used"] = points.used
    report["approach3"] = {
        "model": "log L = LSE(a - alpha log N, b - beta log D, e); E, A, B = exp(e, a, b)",
        "params_log": dict(zip(("a", "b", "e", "alpha", "beta"), a3.params.tolist(), strict=True)),
        "objective": a3.objective,
        "huber_delta": config.huber_delta,
        "optimizer": "L-BFGS-B",
        "message": a3.message,
        "starts": a3.starts,
        "starts_converged": a3.starts_converged,
        "bootstrap": a3.bootstrap,
        "bootstrap_converged": a3.bootstrap_converged,
    }
    report["approach2"] = _approach2_json(a2)
    agree, notes = _compare(a3, a2, intervals)
    report["approaches_agree"] = agree
    report["n_runs"] = len(points)
    report["small_runs"] = int(points.small.sum())
    notes += _notes(config, points, a3)
    report["notes"] = notes
    report["points"] = points.records()
    report["excluded"] = dropped
    report["skipped"] = skipped
    return report


def _approach2_json(a2: Approach2Result) -> dict[str, Any]:
    return {
        "a": a2.a,
        "b": a2.b,
        "a_ci": list(a2.a_ci) if a2.a_ci else None,
        "b_ci": list(a2.b_ci) if a2.b_ci else None,
        "log10_n_opt_intercept": a2.k_n,
        "log10_d_opt_intercept": a2.k_d,
        "bucket_step_log10": a2.step,
        "bootstrap": a2.bootstrap,
        "bootstrap_valid": a2.bootstrap_valid,
        "note": a2.note,
        "budgets": [
            {
                "C": b.compute,
                "runs": b.runs,
                "N_opt": b.n_opt,
                "D_opt": b.d_opt,
                "loss_opt": b.loss_opt,
                "used": b.usable,
                "note": b.note,
            }
            for b in a2.budgets
        ],
    }


def _compare(
    a3: Approach3Result, a2: Approach2Result, intervals: dict[str, tuple[float, float]]
) -> tuple[bool | None, list[str]]:
    """Whether the two approaches' allocation exponents have overlapping intervals."""
    if not a2.fitted:
        return None, [f"Approach 2 not fitted: {a2.note}"]
    if a2.a_ci is None or a2.b_ci is None or "a" not in intervals:
        return None, ["no bootstrap intervals, so the approaches were not compared"]
    notes = []
    agree = True
    for key, ci2, value2 in (("a", a2.a_ci, a2.a), ("b", a2.b_ci, a2.b)):
        lo3, hi3 = intervals[key]
        if hi3 < ci2[0] or ci2[1] < lo3:
            agree = False
            notes.append(
                f"Approach 2 and Approach 3 disagree on {key} (the exponent of "
                f"{'N_opt' if key == 'a' else 'D_opt'}): {a3.values()[key]:.3f} "
                f"[{lo3:.3f}, {hi3:.3f}] vs {value2:.3f} [{ci2[0]:.3f}, {ci2[1]:.3f}]; "
                "the intervals do not overlap"
            )
    return agree, notes


def _notes(config: FitConfig, points: FitPoints, a3: Approach3Result) -> list[str]:
    notes = []
    small = int(points.small.sum())
    if small:
        notes.append(
            f"{small} runs have under {SMALL_N} parameters, where models are known to leave the "
            "power law; exclude_small=true leaves them out"
        )
    if not a3.converged:
        notes.append(f"the Approach-3 optimiser did not converge: {a3.message}")
    if a3.bootstrap and a3.bootstrap_converged < 0.9 * a3.bootstrap:
        notes.append(
            f"only {a3.bootstrap_converged} of {a3.bootstrap} bootstrap refits converged; "
            "the intervals use those"
        )
    return notes


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_finite(data), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _finite(value: Any) -> Any:
    """NaN and infinities become null, so fit.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def summary(report: dict[str, Any]) -> str:
    """The fit in a few lines for the terminal."""

    def show(key: str, fmt: str) -> str:
        ci = report.get(f"{key}_ci")
        tail = f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else ""
        return f"{key} = {report[key]:{fmt}}{tail}"

    a2 = report["approach2"]
    lines = [
        f"Approach 3 on {report['n_runs']} runs (N = {report['used']['n']}, "
        f"{report['used']['n_kind']}; converged: {report['converged']}):",
        "  " + ", ".join(show(k, ".4g") for k in ("E", "A", "B")),
        "  " + ", ".join(show(k, ".4f") for k in ("alpha", "beta")),
        "  N_opt ∝ C^a, D_opt ∝ C^b: " + ", ".join(show(k, ".3f") for k in ("a", "b")),
    ]
    if a2["a"] is not None:
        ci_a, ci_b = a2["a_ci"] or ["?", "?"], a2["b_ci"] or ["?", "?"]
        lines.append(
            f"Approach 2 (IsoFLOP): a = {a2['a']:.3f} {_fmt_ci(ci_a)}, "
            f"b = {a2['b']:.3f} {_fmt_ci(ci_b)}"
        )
    if report["approaches_agree"]:
        lines.append("Approaches 2 and 3 agree: the intervals of a and of b overlap")
    lines += [f"note: {n}" for n in report["notes"]]
    lines.append(f"wrote {report['path']} ({report['seconds']:.1f} s)")
    return "\n".join(lines)


def _fmt_ci(ci: list[Any]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci[0], float) else ""


def run(config: FitConfig, flags: Flags) -> int:
    print(summary(fit_source(config)))
    return 0
