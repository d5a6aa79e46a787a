"""Synthetic scaling-law data for the fit tests: a known L(N, D) on a grid, with noise."""

from __future__ import annotations

import numpy as np

TRUE = {"E": 2.0, "A": 400.0, "B": 1500.0, "alpha": 0.32, "beta": 0.38}


def chinchilla_loss(n: np.ndarray, d: np.ndarray, p: dict[str, float] = TRUE) -> np.ndarray:
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def synthetic_grid(noise: float = 0.01, seed: int = 0, size: int = 7) -> dict[str, np.ndarray]:
    """A size x size grid of N (1e6..1e9) and D (1e7..1e11) with log-normal noise on the loss."""
    n, d = np.meshgrid(np.geomspace(1e6, 1e9, size), np.geomspace(1e7, 1e11, size))
    n, d = n.ravel(), d.ravel()
    rng = np.random.default_rng(seed)
    loss = chinchilla_loss(n, d) * np.exp(noise * rng.standard_normal(n.size))
    return {"N": n, "D": d, "C": 6 * n * d, "loss": loss}


def isoflop_runs(budgets: list[float], sizes_per_budget: int = 7) -> dict[str, np.ndarray]:
    """Noise-free IsoFLOP profiles: per budget, sizes spread x/÷ 8 around the true N_opt."""
    a, b, alpha, beta = TRUE["A"], TRUE["B"], TRUE["alpha"], TRUE["beta"]
    g = (alpha * a / (beta * b)) ** (1 / (alpha + beta))
    rows: dict[str, list[float]] = {"N": [], "D": [], "C": [], "loss": []}
    for c in budgets:
        n_opt = g * (c / 6) ** (beta / (alpha + beta))
        for n in n_opt * np.geomspace(1 / 8, 8, sizes_per_budget):
            d = c / (6 * n)
            rows["N"].append(n)
            rows["D"].append(d)
            rows["C"].append(c)
            rows["loss"].append(float(chinchilla_loss(np.array(n), np.array(d))))
    return {k: np.array(v) for k, v in rows.items()}
