"""`compile=auto`: the rule (compile when its cost is won back over the run's remaining steps),
the run's remaining length, and the per-CPU cache of measured compile costs and speedups."""

from __future__ import annotations

import json
import math

import pytest

from lmforge.train import autocompile
from lmforge.train.autocompile import (
    CompileEstimate,
    compile_pays,
    decide,
    load_estimate,
    remaining_eager_seconds,
    save_measurement,
)
from lmforge.train.peak import cpu_key


@pytest.mark.parametrize(
    ("remaining", "compile_s", "speedup", "pays"),
    [
        (1000.0, 60.0, 1.2, True),  # saves 167 s for 60
        (300.0, 60.0, 1.2, False),  # saves 50 s for 60
        (361.0, 60.0, 1.2, True),  # just past break-even (360 s)
        (100.0, 30.0, 2.0, True),  # the 100-s recipe pays only with a cheap, effective compile
        (100.0, 60.0, 2.0, False),
        (1e9, 60.0, 1.0, False),  # no gain: never, however long
        (1e9, 60.0, 0.8, False),  # slower compiled: never
        (math.inf, 60.0, 1.2, True),  # no budget at all
    ],
)
def test_compile_pays_when_its_cost_is_won_back(remaining, compile_s, speedup, pays):
    assert compile_pays(remaining, CompileEstimate(compile_s, speedup)) is pays


def test_remaining_length_is_whichever_budget_ends_the_run_first():
    assert remaining_eager_seconds(6, 1006, 3.0, None, 0.5) == 500.0
    assert remaining_eager_seconds(6, None, 3.0, 92.0, 0.5) == 89.0
    assert remaining_eager_seconds(6, 1006, 3.0, 92.0, 0.5) == 89.0  # time runs out first
    assert remaining_eager_seconds(6, 106, 3.0, 92.0, 0.5) == 50.0  # steps run out first
    assert remaining_eager_seconds(6, None, 3.0, None, 0.5) == math.inf
    assert remaining_eager_seconds(10, 5, 100.0, 50.0, 0.5) == 0.0


def test_decide_reports_what_it_weighed():
    long_run = decide(0.2, 2000.0, CompileEstimate(60.0, 1.2))
    assert long_run.compile and "assumed compile 60 s for 1.20x" in long_run.reason
    short = decide(0.2, 100.0, CompileEstimate(40.0, 1.5, measured=True))  # saves 33 s
    assert not short.compile and "measured" in short.reason
    record = short.record()
    assert record["compile"] is False and record["eager_step_s"] == 0.2
    assert record["estimate"] == {"compile_s": 40.0, "speedup": 1.5, "measured": True}
    json.dumps(record)  # goes into run_info.json
    assert "remaining_eager_s" not in decide(0.2, math.inf, CompileEstimate(1, 2)).record()


def test_estimates_are_assumed_until_measured_then_cached_per_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    key = autocompile.signature({"model": {"n_layers": 2}, "batch_size": 4, "dtype": "fp32"})
    assumed = load_estimate(key, 1)
    assert assumed == CompileEstimate(autocompile.ASSUMED_COMPILE_S, autocompile.ASSUMED_SPEEDUP)
    save_measurement(key, 1, 12.5, 1.7)
    assert load_estimate(key, 1) == CompileEstimate(12.5, 1.7, measured=True)
    assert load_estimate(key, 2) == assumed  # another thread count is another machine picture
    other = autocompile.signature({"model": {"n_layers": 4}, "batch_size": 4, "dtype": "fp32"})
    assert load_estimate(other, 1) == assumed
    table = json.loads((tmp_path / autocompile.CACHE_FILE).read_text())
    assert list(table) == [f"{cpu_key(1)}|{key}"]
    # A compile time measured without an eager reference keeps the assumed speedup.
    save_measurement(other, 1, 30.0, None)
    assert load_estimate(other, 1) == CompileEstimate(30.0, autocompile.ASSUMED_SPEEDUP)
