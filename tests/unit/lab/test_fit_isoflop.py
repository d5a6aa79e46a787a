"""Approach 2: parabola minima, compute buckets and the recovered allocation exponents."""

from __future__ import annotations

import numpy as np
import pytest
from _fit_support import TRUE, isoflop_runs

from lmforge.lab.fit_isoflop import bucket_labels, fit_approach2, parabola_minimum


def test_parabola_minimum_is_the_vertex():
    x = np.linspace(-2, 3, 9)
    x_min, y_min, coeffs = parabola_minimum(x, 2 * (x - 0.7) ** 2 + 1.5)
    assert x_min == pytest.approx(0.7) and y_min == pytest.approx(1.5)
    np.testing.assert_allclose(coeffs, [2, -2.8, 2 * 0.49 + 1.5])


def test_parabola_without_interior_minimum_says_why():
    x = np.linspace(0, 1, 5)
    assert "distinct" in parabola_minimum(np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    assert "downward" in parabola_minimum(x, -(x**2))
    assert "outside" in parabola_minimum(x, (x - 5) ** 2)


def test_buckets_group_runs_near_one_budget():
    c = np.array([1e18, 1.05e18, 0.95e18, 3e18, 3.1e18, 1e19])
    labels = bucket_labels(c, 0.1)
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] == labels[4] != labels[0]
    assert len(set(labels.tolist())) == 3


def test_recovers_allocation_exponents_of_a_known_law():
    runs = isoflop_runs([1e17, 1e18, 1e19, 1e20, 1e21])
    fit = fit_approach2(runs["N"], runs["D"], runs["C"], runs["loss"], bootstrap=50)
    alpha, beta = TRUE["alpha"], TRUE["beta"]
    assert len(fit.budgets) == 5 and all(b.usable for b in fit.budgets)
    # A parabola in log N is an approximation, so the optimum is close, not exact.
    assert fit.a == pytest.approx(beta / (alpha + beta), abs=0.02)
    assert fit.b == pytest.approx(alpha / (alpha + beta), abs=0.02)
    assert fit.a_ci[0] <= fit.a <= fit.a_ci[1] and fit.bootstrap_valid == 50


def test_too_few_budgets_is_reported_not_fitted():
    runs = isoflop_runs([1e18])
    fit = fit_approach2(runs["N"], runs["D"], runs["C"], runs["loss"], bootstrap=10)
    assert not fit.fitted and "needs at least 2" in fit.note
