"""Approach 3 of Hoffmann et al. 2022, as Besiroglu et al. 2024 re-did it: L = E + A/N^α + B/D^β.

Fits `log L = LSE(a − α log N, b − β log D, e)` (A = e^a, B = e^b, E = e^e) by minimising the Huber
loss (δ = 1e-3) of the log-loss residuals summed over runs, with scipy's L-BFGS-B from every point
of a grid of starts, keeping the best converged optimum; bootstrap refits (rows resampled with
replacement, each refit started from the full-data optimum) give percentile intervals. The
objective and its analytic gradient are numpy, vectorised over many parameter vectors at once.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

# Besiroglu et al.'s grid (Hoffmann et al.'s, extended): 6 · 6 · 5 · 5 · 5 = 4500 starts.
GRID_A = np.arange(0.0, 30.0, 5.0)
GRID_B = np.arange(0.0, 30.0, 5.0)
GRID_E = np.arange(-1.0, 1.5, 0.5)
GRID_ALPHA = np.arange(0.0, 2.5, 0.5)
GRID_BETA = np.arange(0.0, 2.5, 0.5)
PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
# L-BFGS-B settings on the objective divided by δ (so they mean the same for any δ): a tight
# relative tolerance, because a loose one stops early on this flat, nearly-L1 objective.
_LBFGS_OPTIONS = {"maxiter": 2000, "ftol": 1e-11, "gtol": 1e-8}


@dataclass
class Approach3Result:
    """The best fit, its intervals and how the optimiser fared."""

    params: np.ndarray  # (5,) a, b, e, alpha, beta
    objective: float  # the summed Huber loss at the optimum
    converged: bool
    message: str
    starts: int
    starts_converged: int
    bootstrap: int = 0
    bootstrap_converged: int = 0
    samples: np.ndarray = field(default_factory=lambda: np.empty((0, 5)))  # converged refits
    ci: float = 0.95

    def values(self) -> dict[str, float]:
        """E, A, B, alpha, beta and the allocation exponents a = β/(α+β), b = α/(α+β)."""
        return _named(self.params)

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Percentile bootstrap interval of every value in `values()` (empty without refits)."""
        if len(self.samples) == 0:
            return {}
        named = [_named(p) for p in self.samples]
        lo, hi = 50 * (1 - self.ci), 50 * (1 + self.ci)
        return {
            key: (
                float(np.percentile([v[key] for v in named], lo)),
                float(np.percentile([v[key] for v in named], hi)),
            )
            for key in named[0]
        }


def _named(p: np.ndarray) -> dict[str, float]:
    a, b, e, alpha, beta = (float(v) for v in p)
    total = alpha + beta
    return {
        "E": float(np.exp(e)),
        "A": float(np.exp(a)),
        "B": float(np.exp(b)),
        "alpha": alpha,
        "beta": beta,
        "a": beta / total if total else float("nan"),
        "b": alpha / total if total else float("nan"),
    }


def grid_starts() -> np.ndarray:
    """The (4500, 5) grid of starting points, rows (a, b, e, alpha, beta)."""
    rows = itertools.product(GRID_ALPHA, GRID_BETA, GRID_E, GRID_A, GRID_B)
    return np.array([(a, b, e, alpha, beta) for alpha, beta, e, a, b in rows])


def huber_objective(
    params: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_loss: np.ndarray,
    delta: float,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed Huber loss / δ and its gradient for K parameter vectors at once.

    params (K, 5); log_n, log_d, log_loss (R,); weights (K, R) or None (each run counted once).
    Returns (K,) objective values and their (K, 5) gradients.
    """
    a, b, e, alpha, beta = (params[:, i : i + 1] for i in range(5))  # each (K, 1)
    u_n = a - alpha * log_n  # (K, R)
    u_d = b - beta * log_d
    top = np.maximum(np.maximum(u_n, u_d), e)  # a stable log-sum-exp
    w_n, w_d, w_e = np.exp(u_n - top), np.exp(u_d - top), np.exp(e - top)
    total = w_n + w_d + w_e
    resid = top + np.log(total) - log_loss
    size = np.abs(resid)
    loss = np.where(size <= delta, 0.5 * resid * resid, delta * (size - 0.5 * delta))
    slope = np.clip(resid, -delta, delta)  # d huber / d resid
    if weights is not None:
        loss, slope = loss * weights, slope * weights
    slope = slope / (delta * total)  # folds in 1/δ and the softmax denominator
    grad = np.stack(
        [
            (slope * w_n).sum(1),
            (slope * w_d).sum(1),
            (slope * w_e).sum(1),
            -(slope * w_n * log_n).sum(1),
            -(slope * w_d * log_d).sum(1),
        ],
        axis=1,
    )
    return loss.sum(1) / delta, grad


def predict_log_loss(params: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """log L at (n, d) for one parameter vector (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = params
    terms = np.stack([a - alpha * np.log(n), b - beta * np.log(d), np.full(np.shape(n), e)])
    return np.logaddexp.reduce(terms, axis=0)


def optimal_allocation(params: np.ndarray, compute: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N_opt(C) and D_opt(C) that minimise the fitted loss subject to C = 6 N D."""
    a, b, _, alpha, beta = params
    # d/dN of A N^-α + B (C/6N)^-β = 0  ->  N = G (C/6)^(β/(α+β)),  G = (αA / βB)^(1/(α+β)).
    g = np.exp((np.log(alpha) + a - np.log(beta) - b) / (alpha + beta))
    n_opt = g * (np.asarray(compute) / 6.0) ** (beta / (alpha + beta))
    return n_opt, np.asarray(compute) / (6.0 * n_opt)


def _minimise_one(
    start: np.ndarray, data: tuple[np.ndarray, np.ndarray, np.ndarray, float], w: np.ndarray | None
) -> tuple[np.ndarray, float, bool, str]:
    log_n, log_d, log_loss, delta = data
    weights = None if w is None else w[None, :]

    def fun(p: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = huber_objective(p[None, :], log_n, log_d, log_loss, delta, weights)
        return float(f[0]), g[0]

    with np.errstate(over="ignore", invalid="ignore"):
        res = minimize(fun, start, jac=True, method="L-BFGS-B", options=_LBFGS_OPTIONS)
    ok = bool(res.success) and bool(np.isfinite(res.fun))
    return res.x, float(res.fun), ok, str(res.message)


def _minimise_chunk(
    starts: np.ndarray,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, float],
    weights: np.ndarray | None,
) -> list[tuple[np.ndarray, float, bool, str]]:
    """L-BFGS-B from each start (row i weighted by weights[i] when given); runs in a worker."""
    # L-BFGS-B's BLAS calls are on 5-vectors: threads only add synchronisation, and on a busy
    # machine a descheduled BLAS thread made each call ~10x slower (measured).
    with threadpool_limits(limits=1, user_api="blas"):
        return [
            _minimise_one(s, data, None if weights is None else weights[i])
            for i, s in enumerate(starts)
        ]


def _minimise_many(
    starts: np.ndarray,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, float],
    weights: np.ndarray | None,
    workers: int,
) -> list[tuple[np.ndarray, float, bool, str]]:
    """`_minimise_chunk` split over `workers` processes (in order); inline when workers is 1."""
    if workers <= 1 or len(starts) < 2 * workers:
        return _minimise_chunk(starts, data, weights)
    pieces = np.array_split(np.arange(len(starts)), workers * 4)
    # spawn, not fork: the caller may hold threads (torch, BLAS) that a forked child would inherit.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [
            pool.submit(_minimise_chunk, starts[p], data, None if weights is None else weights[p])
            for p in pieces
            if len(p)
        ]
        return [r for f in futures for r in f.result()]


def screen_starts(
    starts: np.ndarray, data: tuple[np.ndarray, np.ndarray, np.ndarray, float], keep: int
) -> np.ndarray:
    """The `keep` starts with the lowest objective, evaluated all at once (a cheap pre-filter)."""
    log_n, log_d, log_loss, delta = data
    with np.errstate(over="ignore", invalid="ignore"):
        values, _ = huber_objective(starts, log_n, log_d, log_loss, delta)
    values = np.where(np.isfinite(values), values, np.inf)
    return starts[np.sort(np.argsort(values, kind="stable")[:keep])]


def fit_approach3(
    n: np.ndarray,
    d: np.ndarray,
    loss: np.ndarray,
    *,
    delta: float = 1e-3,
    starts: int = 0,
    bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    workers: int = 1,
) -> Approach3Result:
    """Fit L = E + A/N^α + B/D^β; `starts` > 0 keeps only that many of the best grid starts."""
    data = (np.log(n), np.log(d), np.log(loss), float(delta))
    grid = grid_starts()
    if 0 < starts < len(grid):
        grid = screen_starts(grid, data, starts)
    log.info("approach 3: L-BFGS-B from %d starts on %d worker(s)", len(grid), workers)
    results = _minimise_many(grid, data, None, workers)
    converged = [r for r in results if r[2]]
    pool = converged or results  # with no converged start, report the best one as not converged
    best = min(pool, key=lambda r: r[1])
    result = Approach3Result(
        params=best[0],
        objective=best[1] * delta,
        converged=best[2],
        message=best[3],
        starts=len(results),
        starts_converged=len(converged),
        ci=ci,
    )
    log.info(
        "approach 3: best of %d starts (%d converged), objective %.6g",
        len(results),
        len(converged),
        result.objective,
    )
    if bootstrap > 0:
        log.info("approach 3: %d bootstrap refits", bootstrap)
        _bootstrap(result, data, bootstrap, seed, workers)
    return result


def _bootstrap(
    result: Approach3Result,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, float],
    count: int,
    seed: int,
    workers: int,
) -> None:
    """Refit on `count` resamples (rows drawn with replacement, as multiplicity weights)."""
    rows = len(data[0])
    rng = np.random.default_rng(seed)
    # Drawing R rows with replacement is a multinomial count per row; weights keep arrays fixed.
    weights = rng.multinomial(rows, np.full(rows, 1.0 / rows), size=count).astype(float)
    starts = np.repeat(result.params[None, :], count, axis=0)
    refits = _minimise_many(starts, data, weights, workers)
    ok = [r[0] for r in refits if r[2]]
    result.bootstrap = count
    result.bootstrap_converged = len(ok)
    result.samples = np.array(ok) if ok else np.empty((0, 5))


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1
