"""The parts of a sweep's report: its points, loss vs compute, the fitted laws, the abilities.

An LM sweep gets loss against compute per size with the Approach-3 frontier, and N_opt(C),
D_opt(C) with their intervals from fit.json (fitted now through `fit_verb.fit_source` when
missing). An ability sweep gets the five metrics against parameters and compute, with the p^L
curve over exact match, and the smallest model that reaches 90% exact match.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.lab.report_blocks import Image, Part, Table, read_jsonl
from lmforge.lab.report_config import ReportConfig
from lmforge.lab.report_plots import ability_png, curves_png, loss_vs_compute_png

EMERGED = 0.9  # "reached" means at least this exact match


def sweep_parts(sweep_dir: Path, config: ReportConfig) -> list[Part]:
    index = json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    points = index["points"]
    done = [p for p in points if p.get("status") == "done" and p.get("loss") is not None]
    parts = [_overview(sweep_dir, index, points)]
    if index.get("kind") == "ability":
        parts += _ability_parts(sweep_dir, index, done)
    else:
        fit = _fit(sweep_dir, config, done)
        parts += [_loss_vs_compute(done, fit), _laws(sweep_dir, fit)]
        tasks = _tasks_table(done)
        if tasks is not None:
            parts.append(tasks)
    return parts


def _overview(sweep_dir: Path, index: dict[str, Any], points: list[dict[str, Any]]) -> Part:
    rows = [[p["name"], p.get("status"), p["N"], p.get("N_non_embedding"), p["D"], p["C"],
             p.get("loss"), p.get("seconds")] for p in points]  # fmt: skip
    what = f"task {index['task']}" if index.get("kind") == "ability" else f"base {index['base']}"
    counts = ", ".join(f"{n} {status}" for status, n in (index.get("status") or {}).items())
    text = (
        f"{len(points)} points ({counts}), {what}, executor {index.get('executor')}, "
        f"{index.get('threads')} thread(s) per point. N counts every parameter; C = FLOPs per "
        "token (attention included) × D."
    )
    headers = ["point", "status", "N", "N non-emb.", "D (tokens)", "C (FLOPs)", "loss", "s"]
    return Part("Points", [text, Table(headers, rows)])


# -- LM sweeps ------------------------------------------------------------------------------------


def _fit(sweep_dir: Path, config: ReportConfig, done: list[dict[str, Any]]) -> dict[str, Any]:
    """fit.json of the sweep: read it, or fit now (when allowed and there are enough runs)."""
    path = sweep_dir / "fit.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if not config.fit:
        return {"error": "no fit.json (fit=false); run: lmforge fit " + str(sweep_dir)}
    from lmforge.lab.fit_config import FitConfig
    from lmforge.lab.fit_verb import fit_source

    try:
        # In-process (workers=1): a report's fit is small, and spawning costs more than it saves.
        fit = FitConfig(
            source=str(sweep_dir), bootstrap=config.bootstrap, starts=config.starts, workers=1
        )
        return fit_source(fit)
    except LmforgeError as exc:
        return {"error": str(exc)}


def frontier(fit: dict[str, Any], c_min: float, c_max: float) -> tuple[list[float], list[float]]:
    """Approach 3's compute-optimal loss at C = 6 N D: N_opt = G (C/6)^a, D_opt = (C/6)^b / G
    with G = (alpha A / (beta B))^(1 / (alpha + beta)) (Hoffmann et al. 2022, eq. 4)."""
    E, A, B, alpha, beta = (fit[k] for k in ("E", "A", "B", "alpha", "beta"))
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    cs = [c_min * (c_max / c_min) ** (i / 40) for i in range(41)]
    losses = []
    for c in cs:
        n, d = G * (c / 6) ** a, (c / 6) ** b / G
        losses.append(E + A / n**alpha + B / d**beta)
    return cs, losses


def _loss_vs_compute(done: list[dict[str, Any]], fit: dict[str, Any]) -> Part:
    if not done:
        return Part("Loss vs compute", ["No point has finished yet."])
    line = None
    if "E" in fit and fit.get("E") is not None:
        cs = [p["C"] for p in done]
        line = frontier(fit, min(cs), max(cs))
    png = loss_vs_compute_png(done, line)
    text = "Final loss of each point against its training compute, one line per model size"
    text += "; the dashed line is the fitted compute-optimal frontier." if line else "."
    return Part("Loss vs compute", [text, Image("loss_vs_compute.png", png, text)])


def _laws(sweep_dir: Path, fit: dict[str, Any]) -> Part:
    if "error" in fit:
        return Part("Scaling laws", [f"Not fitted: {fit['error']}"])
    blocks: list[Any] = []

    def ci(key: str, source: dict[str, Any] = fit) -> str:
        value, interval = source.get(key), source.get(f"{key}_ci")
        if value is None:
            return "n/a"
        return f"{value:.4g}" + (f" [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else "")

    a2 = fit.get("approach2", {})
    rows = [
        ["Approach 3", ci("E"), ci("alpha"), ci("beta"), ci("a"), ci("b")],
        ["Approach 2 (IsoFLOP)", "", "", "", ci("a", a2), ci("b", a2)],
    ]
    blocks.append(
        f"{fit['n_runs']} runs fitted (N = {fit['used']['n']}); intervals at level {fit['ci']}. "
        "N_opt ∝ C^a and D_opt ∝ C^b. Approaches agree: "
        f"{fit.get('approaches_agree')}. Optimiser converged: {fit.get('converged')}."
    )
    blocks.append(Table(["", "E", "alpha", "beta", "a (N_opt)", "b (D_opt)"], rows))
    budgets = [b for b in a2.get("budgets", []) if b.get("used")]
    if budgets:
        optima = [[b["C"], b["N_opt"], b["D_opt"], b["loss_opt"]] for b in budgets]
        blocks.append(Table(["C", "N_opt", "D_opt", "loss at optimum"], optima))
    blocks += [f"note: {n}" for n in fit.get("notes", [])]
    for name in ("fit_optimal.png", "fit_isoflop.png", "fit_parity.png"):
        path = sweep_dir / "plots" / name
        if path.is_file():
            blocks.append(Image(name, path.read_bytes(), name.removesuffix(".png")))
    return Part("Scaling laws", blocks)


def _tasks_table(done: list[dict[str, Any]]) -> Part | None:
    with_tasks = [p for p in done if p.get("tasks")]
    if not with_tasks:
        return None
    rows = []
    for p in with_tasks:
        for task, metrics in p["tasks"].items():
            shown = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
            rows.append([p["name"], task, ", ".join(f"{k}={v:.4g}" for k, v in shown.items())])
    return Part("Eval tasks", [Table(["point", "task", "metrics"], rows)])


# -- ability sweeps -------------------------------------------------------------------------------


def _ability_parts(
    sweep_dir: Path, index: dict[str, Any], done: list[dict[str, Any]]
) -> list[Part]:
    if not done:
        return [Part("Abilities", ["No point has finished yet."])]
    for p in done:
        p["examples"] = _examples_of(p)
    group = "examples" if len({p["examples"] for p in done}) > 1 else None
    text = (
        "Test-set metrics at the end of training, against parameters (top) and compute (bottom). "
        "The dashed line over exact match is p^L: what exact match would be if each of the L "
        "answer tokens were right independently with the measured per-token accuracy p. Where "
        "exact match follows p^L, a sharp rise is the metric's doing (Schaeffer et al. 2023); "
        "where the continuous metrics jump too, the change is in the model."
    )
    parts = [Part("Abilities", [text, Image("abilities.png", ability_png(done, group), text)])]
    rows = []
    for p in sorted(done, key=lambda p: (p["N"], p["C"])):
        m = p["metrics"]["test"]
        keys = ("exact_match", "predicted_exact_match", "token_accuracy", "edit_distance",
                "neg_log_p", "brier")  # fmt: skip
        rows.append([p["name"], p["N"], p["C"], *(m[k] for k in keys)])
    headers = ["point", "N", "C", "exact match", "p^L", "token acc.", "edit dist.", "-log p",
               "Brier"]  # fmt: skip
    parts.append(Part("Final test metrics", [Table(headers, rows), _smallest(done)]))
    if index.get("task") == "induction":
        parts.append(_induction(sweep_dir, done))
    return parts


def _examples_of(point: dict[str, Any]) -> int | None:
    """The training-set size of an `[ability]` point named ..._n<examples>[_s<seed>]."""
    if "_n" not in point["name"]:
        return None
    tail = point["name"].rpartition("_n")[2].split("_")[0]
    return int(tail) if tail.isdigit() else None


def _smallest(done: list[dict[str, Any]]) -> str:
    reached = [p for p in done if p["metrics"]["test"]["exact_match"] >= EMERGED]
    if not reached:
        best = max(done, key=lambda p: p["metrics"]["test"]["exact_match"])
        return (
            f"No point reached {EMERGED:.0%} exact match (best: {best['name']}, "
            f"{best['metrics']['test']['exact_match']:.1%})."
        )
    first = min(reached, key=lambda p: (p["N"], p["C"]))
    cheapest = min(reached, key=lambda p: p["C"])
    return (
        f"Smallest model reaching {EMERGED:.0%} exact match: {first['name']} (N = {first['N']:,}); "
        f"least compute: {cheapest['name']} (C = {cheapest['C']:.3g} FLOPs)."
    )


def _induction(sweep_dir: Path, done: list[dict[str, Any]]) -> Part:
    score_series, head_series = {}, {}
    rows = []
    for p in done:
        history = read_jsonl(sweep_dir / p["history_file"]) if p.get("history_file") else []
        if not history:
            continue
        steps = [r["step"] for r in history]
        score_series[p["name"]] = (steps, [r["icl_score"] for r in history])
        best = [max((max(h) for h in r["prefix_matching"]), default=math.nan)
                if r.get("prefix_matching") else math.nan for r in history]  # fmt: skip
        head_series[p["name"]] = (steps, best)
        rows.append([p["name"], history[-1]["icl_score"], best[-1]])
    png = curves_png([("in-context score (nats)", score_series),
                      ("best head's prefix-matching score", head_series)])  # fmt: skip
    text = (
        "In-context score (loss on the segment's first copy minus loss on its repeat) and the "
        "highest prefix-matching score of any head, across training: induction heads forming "
        "show as the prefix-matching score rising with the in-context score."
    )
    table = Table(["point", "final ICL score", "best head's prefix matching"], rows)
    return Part("Induction", [text, Image("induction_sweep.png", png, text), table])
