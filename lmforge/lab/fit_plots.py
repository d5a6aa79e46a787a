"""The figures of `lmforge fit`, as PNG files (matplotlib `Figure` objects, Agg, no pyplot state).

`plots/fit_loss_vs_compute.png` (runs coloured by size, the Approach-3 compute-optimal frontier),
`plots/fit_parity.png` (fitted against observed loss), `plots/fit_isoflop.png` (the IsoFLOP
parabolas and their minima) and `plots/fit_optimal.png` (N_opt(C) and D_opt(C) from both
approaches). Each file is written to a temp name and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lmforge.lab.fit_approach3 import Approach3Result, optimal_allocation, predict_log_loss
from lmforge.lab.fit_isoflop import Approach2Result
from lmforge.lab.fit_table import FitPoints

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def write_plots(
    out_dir: Path,
    points: FitPoints,
    excluded: FitPoints | None,
    approach3: Approach3Result,
    approach2: Approach2Result,
) -> list[Path]:
    """Write every figure under `out_dir/plots/`; returns their paths."""
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = [
        _save(_loss_vs_compute(points, excluded, approach3), plots / "fit_loss_vs_compute.png"),
        _save(_parity(points, approach3), plots / "fit_parity.png"),
    ]
    isoflop = plots / "fit_isoflop.png"
    if approach2.fitted:
        written.append(_save(_isoflop(points, approach2), isoflop))
    else:
        isoflop.unlink(missing_ok=True)  # a stale one from an earlier fit would mislead
    written.append(_save(_optimal(points, approach3, approach2), plots / "fit_optimal.png"))
    return written


def _figure(width: float = 7.0, height: float = 4.5, cols: int = 1) -> tuple[Figure, list]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = [fig.add_subplot(1, cols, i + 1) for i in range(cols)]
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    return path


def _loss_vs_compute(points: FitPoints, excluded: FitPoints | None, fit: Approach3Result) -> Figure:
    fig, (ax,) = _figure()
    scatter = ax.scatter(
        points.c, points.loss, c=np.log10(points.n), cmap="viridis", s=14, label="runs"
    )
    fig.colorbar(scatter, ax=ax, label="log10 N (parameters)")
    if excluded is not None and len(excluded):
        ax.scatter(excluded.c, excluded.loss, marker="x", color="grey", s=18, label="excluded")
    grid = np.geomspace(points.c.min(), points.c.max(), 100)
    n_opt, d_opt = optimal_allocation(fit.params, grid)
    frontier = np.exp(predict_log_loss(fit.params, n_opt, d_opt))
    ax.plot(grid, frontier, color="crimson", label="Approach 3 frontier (C = 6ND)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute C (FLOPs)")
    ax.set_ylabel("final loss")
    ax.legend(fontsize=8)
    return fig


def _parity(points: FitPoints, fit: Approach3Result) -> Figure:
    fig, (ax,) = _figure(5.0, 5.0)
    predicted = np.exp(predict_log_loss(fit.params, points.n, points.d))
    ax.scatter(points.loss, predicted, s=12, c=np.log10(points.n), cmap="viridis")
    lo, hi = min(points.loss.min(), predicted.min()), max(points.loss.max(), predicted.max())
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1)
    v = fit.values()
    ax.set_title(
        f"E={v['E']:.3g}  A={v['A']:.3g}  B={v['B']:.3g}  α={v['alpha']:.3f}  β={v['beta']:.3f}",
        fontsize=9,
    )
    ax.set_xlabel("observed loss")
    ax.set_ylabel("fitted loss (Approach 3)")
    return fig


def _isoflop(points: FitPoints, fit: Approach2Result) -> Figure:
    from matplotlib import colormaps

    fig, (ax,) = _figure()
    usable = [(b, m) for b, m in zip(fit.budgets, fit.members, strict=True) if b.usable]
    colours = colormaps["plasma"](np.linspace(0, 0.9, len(usable)))
    for (budget, members), colour in zip(usable, colours, strict=True):
        n = points.n[members]
        ax.scatter(n, points.loss[members], s=12, color=colour)
        x = np.linspace(np.log(n.min()), np.log(n.max()), 50)
        ax.plot(np.exp(x), np.polyval(budget.parabola_n, x), color=colour, linewidth=1)
        ax.plot(budget.n_opt, budget.loss_opt, marker="*", color=colour, markersize=10)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("final loss")
    ax.set_title(f"IsoFLOP profiles ({len(usable)} budgets, ★ = minimum)", fontsize=10)
    return fig


def _optimal(points: FitPoints, a3: Approach3Result, a2: Approach2Result) -> Figure:
    fig, axes = _figure(10.0, 4.5, cols=2)
    grid = np.geomspace(points.c.min(), points.c.max(), 50)
    n3, d3 = optimal_allocation(a3.params, grid)
    usable = [b for b in a2.budgets if b.usable]
    for ax, what, line3, exp3, k2, exp2 in (
        (axes[0], "N_opt", n3, a3.values()["a"], a2.k_n, a2.a),
        (axes[1], "D_opt", d3, a3.values()["b"], a2.k_d, a2.b),
    ):
        ax.plot(grid, line3, color="crimson", label=f"Approach 3: ∝ C^{exp3:.3f}")
        if a2.fitted and k2 is not None and exp2 is not None:
            opt = [b.n_opt if what == "N_opt" else b.d_opt for b in usable]
            ax.scatter([b.compute for b in usable], opt, color="navy", s=16, zorder=3)
            ax.plot(grid, 10**k2 * grid**exp2, color="navy", label=f"Approach 2: ∝ C^{exp2:.3f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(what)
        ax.legend(fontsize=8)
    return fig
