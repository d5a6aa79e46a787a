"""Approach 2 of Hoffmann et al. 2022 (IsoFLOP profiles): compute-optimal N and D per budget.

Runs are grouped by compute budget: C is bucketed by rounding log10 C to a step (0.1 decade by
default, so runs within ~±12% of one budget share a bucket). Per budget, parabolas of loss against
log N and against log D give N_opt and D_opt at their minima; budgets with fewer than three distinct
sizes, a non-convex parabola, or a minimum outside the sampled sizes are reported and left out.
Power laws N_opt ∝ C^a and D_opt ∝ C^b are least-squares lines in log space; bootstrap resampling
of the runs within each budget gives their percentile intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_SIZES = 3  # a parabola has three coefficients


@dataclass
class Budget:
    """One IsoFLOP profile: its runs, the parabola fits and their minima."""

    compute: float  # geometric mean of the runs' C
    runs: int
    n_opt: float | None = None
    d_opt: float | None = None
    loss_opt: float | None = None
    parabola_n: list[float] | None = None  # loss = p0 (ln N)^2 + p1 ln N + p2
    parabola_d: list[float] | None = None
    note: str = ""

    @property
    def usable(self) -> bool:
        return self.n_opt is not None and self.d_opt is not None


@dataclass
class Approach2Result:
    """N_opt(C) = 10^k_n · C^a and D_opt(C) = 10^k_d · C^b, with intervals where bootstrapped."""

    budgets: list[Budget]
    step: float
    a: float | None = None
    b: float | None = None
    k_n: float | None = None
    k_d: float | None = None
    a_ci: tuple[float, float] | None = None
    b_ci: tuple[float, float] | None = None
    bootstrap: int = 0
    bootstrap_valid: int = 0
    note: str = ""
    members: list[np.ndarray] = field(default_factory=list)  # row indices per budget

    @property
    def fitted(self) -> bool:
        return self.a is not None


def bucket_labels(compute: np.ndarray, step: float) -> np.ndarray:
    """The bucket of each run: round(log10 C / step)."""
    return np.round(np.log10(compute) / step).astype(np.int64)


def parabola_minimum(x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray] | str:
    """(x_min, y_min, coefficients) of the least-squares parabola, or why there is none."""
    if len(np.unique(x)) < MIN_SIZES:
        return f"fewer than {MIN_SIZES} distinct sizes"
    coeffs = np.polyfit(x, y, 2)
    if coeffs[0] <= 0:
        return "the parabola opens downward (no minimum)"
    x_min = -coeffs[1] / (2 * coeffs[0])
    if not x.min() <= x_min <= x.max():
        return "the minimum lies outside the sampled sizes"
    return float(x_min), float(np.polyval(coeffs, x_min)), coeffs


def _profile(n: np.ndarray, d: np.ndarray, loss: np.ndarray, compute: float) -> Budget:
    budget = Budget(compute=compute, runs=len(n))
    by_n = parabola_minimum(np.log(n), loss)
    by_d = parabola_minimum(np.log(d), loss)
    if isinstance(by_n, str) or isinstance(by_d, str):
        budget.note = by_n if isinstance(by_n, str) else str(by_d)
        return budget
    budget.n_opt, budget.loss_opt = float(np.exp(by_n[0])), by_n[1]
    budget.d_opt = float(np.exp(by_d[0]))
    budget.parabola_n, budget.parabola_d = by_n[2].tolist(), by_d[2].tolist()
    return budget


def _power_law(compute: np.ndarray, optimum: np.ndarray) -> tuple[float, float]:
    """(exponent, log10 intercept) of optimum = 10^k · C^exponent by least squares in log10."""
    slope, intercept = np.polyfit(np.log10(compute), np.log10(optimum), 1)
    return float(slope), float(intercept)


def fit_approach2(
    n: np.ndarray,
    d: np.ndarray,
    c: np.ndarray,
    loss: np.ndarray,
    *,
    step: float = 0.1,
    bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> Approach2Result:
    """IsoFLOP fit of `loss` over runs with sizes n, tokens d and compute c."""
    labels = bucket_labels(c, step)
    members = [np.flatnonzero(labels == k) for k in np.unique(labels)]
    computes = np.array([np.exp(np.mean(np.log(c[m]))) for m in members])
    budgets = [_profile(n[m], d[m], loss[m], cm) for m, cm in zip(members, computes, strict=True)]
    result = Approach2Result(budgets=budgets, step=step, members=members)
    usable = [i for i, b in enumerate(budgets) if b.usable]
    if len(usable) < 2:
        result.note = (
            f"{len(usable)} of {len(budgets)} compute budgets have an interior loss minimum; "
            "Approach 2 needs at least 2 (run 3+ sizes per budget that bracket the optimum)"
        )
        return result
    c_ok = computes[usable]
    result.a, result.k_n = _power_law(c_ok, np.array([budgets[i].n_opt for i in usable]))
    result.b, result.k_d = _power_law(c_ok, np.array([budgets[i].d_opt for i in usable]))
    if bootstrap > 0:
        _bootstrap(result, n, d, loss, computes[usable], usable, bootstrap, ci, seed)
    return result


def _bootstrap(
    result: Approach2Result,
    n: np.ndarray,
    d: np.ndarray,
    loss: np.ndarray,
    computes: np.ndarray,
    usable: list[int],
    count: int,
    ci: float,
    seed: int,
) -> None:
    """Resample runs within each usable budget; refit the profiles and both power laws."""
    rng = np.random.default_rng(seed)
    a_samples, b_samples = [], []
    groups = [result.members[i] for i in usable]
    for _ in range(count):
        c_ok, n_ok, d_ok = [], [], []
        for members, compute in zip(groups, computes, strict=True):
            pick = rng.choice(members, size=len(members), replace=True)
            by_n = parabola_minimum(np.log(n[pick]), loss[pick])
            by_d = parabola_minimum(np.log(d[pick]), loss[pick])
            if isinstance(by_n, str) or isinstance(by_d, str):
                continue
            c_ok.append(compute)
            n_ok.append(np.exp(by_n[0]))
            d_ok.append(np.exp(by_d[0]))
        if len(c_ok) >= 2:
            a_samples.append(_power_law(np.array(c_ok), np.array(n_ok))[0])
            b_samples.append(_power_law(np.array(c_ok), np.array(d_ok))[0])
    result.bootstrap, result.bootstrap_valid = count, len(a_samples)
    if a_samples:
        lo, hi = 50 * (1 - ci), 50 * (1 + ci)
        result.a_ci = (float(np.percentile(a_samples, lo)), float(np.percentile(a_samples, hi)))
        result.b_ci = (float(np.percentile(b_samples, lo)), float(np.percentile(b_samples, hi)))
