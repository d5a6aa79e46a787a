"""LR schedules: warmup, cosine to the floor, WSD, constant; time-based progress."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.train.schedule import lr_factor, set_lr


def test_warmup_is_linear_then_cosine_reaches_floor():
    f = [lr_factor("cosine", s, s / 100, warmup_steps=10, min_lr_ratio=0.1) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:10], strict=False))
    assert f[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))  # monotone decay
    mid = lr_factor("cosine", 55, 0.5, warmup_steps=10, min_lr_ratio=0.1)
    assert mid == pytest.approx(0.1 + 0.9 * 0.5)


def test_wsd_is_flat_then_decays_linearly():
    assert lr_factor("wsd", 50, 0.5, min_lr_ratio=0.0, decay_frac=0.2) == 1.0
    assert lr_factor("wsd", 80, 0.8, min_lr_ratio=0.0, decay_frac=0.2) == pytest.approx(1.0)
    assert lr_factor("wsd", 90, 0.9, min_lr_ratio=0.0, decay_frac=0.2) == pytest.approx(0.5)
    assert lr_factor("wsd", 100, 1.0, min_lr_ratio=0.1, decay_frac=0.2) == pytest.approx(0.1)


def test_constant_and_progress_clamped():
    assert lr_factor("constant", 5, 0.3, warmup_steps=0) == 1.0
    # Progress from a time budget may overshoot 1 on the last step: stays at the floor.
    assert lr_factor("cosine", 999, 1.7, min_lr_ratio=0.2) == pytest.approx(0.2)
    assert math.isclose(lr_factor("cosine", 0, 0.0), 1.0)


def test_set_lr_scales_each_group_base_rate():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}])
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    assert set_lr(opt, 0.5) == 0.5
    assert [g["lr"] for g in opt.param_groups] == [0.5, pytest.approx(0.05)]
