"""Compiled training equals eager training: `compile=true` from the first step (with the oneDNN
linear kernel, which must survive inductor) and `compile=auto` switching mid-run; the decision,
the compile time and the measured speedup land in run_info.json and the per-CPU cache."""

from __future__ import annotations

import json

import pytest
from _train_support import make_data_dir, read_rows, train_config, train_losses
from lmforge_testing import require

from lmforge.train import autocompile
from lmforge.train.autocompile import compiler_available
from lmforge.train.kernels import onednn_available
from lmforge.train.trainer import run
from lmforge.verb import Flags

STEPS = 14  # 6 eager steps to decide, 1 compiling, 5 timed, 2 more
RTOL = 2e-4  # inductor fuses and reorders float sums; eager and compiled agree to ~1e-5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("compile"))


@pytest.fixture(scope="module")
def eager_losses(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eager") / "run"
    cfg = train_config(data, out, compile=False, train__max_steps=STEPS, sample__every=0)
    assert run(cfg, Flags()) == 0
    info = json.loads((out / "run_info.json").read_text())
    assert info["compile"] == {"setting": False, "compile": False, "reason": "compile=false"}
    return train_losses(out)


def _close(a: dict[int, float], b: dict[int, float]) -> None:
    assert a and a.keys() <= b.keys()
    for step in a:
        assert abs(a[step] - b[step]) <= RTOL * abs(b[step]), (step, a[step], b[step])


@pytest.mark.slow  # inductor compiles a forward and a backward graph: tens of seconds cold
def test_compile_true_trains_to_the_eager_losses(data, tmp_path, eager_losses):
    require(compiler_available(), "inductor needs a C++ compiler")
    require(onednn_available(), "torch built without oneDNN")
    out = tmp_path / "compiled"
    cfg = train_config(
        data,
        out,
        compile=True,
        train__linear_kernel="onednn",
        train__max_steps=STEPS,
        sample__every=0,
    )
    assert run(cfg, Flags()) == 0
    losses = train_losses(out)
    assert len(losses) == STEPS
    _close(losses, eager_losses)
    info = json.loads((out / "run_info.json").read_text())
    assert info["compile"]["compile"] is True and info["linear_kernel"] == "onednn"


@pytest.mark.slow  # inductor compiles a forward and a backward graph: tens of seconds cold
def test_auto_compiles_a_run_long_enough_midway(data, tmp_path, monkeypatch, eager_losses):
    require(compiler_available(), "inductor needs a C++ compiler")
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    # As if an earlier run had measured a free compile and a large gain: this short run pays.
    monkeypatch.setattr(autocompile, "ASSUMED_COMPILE_S", 0.0)
    monkeypatch.setattr(autocompile, "ASSUMED_SPEEDUP", 10.0)
    out = tmp_path / "auto"
    cfg = train_config(data, out, train__max_steps=STEPS, sample__every=0, train__log_every=3)
    assert cfg.compile == "auto"
    assert run(cfg, Flags()) == 0
    _close(train_losses(out), eager_losses)
    record = json.loads((out / "run_info.json").read_text())["compile"]
    assert record["setting"] == "auto" and record["compile"] is True
    assert record["decided_at_step"] == autocompile.DECIDE_AFTER
    # 0 is honest when inductor's graph cache already holds these graphs (an earlier test in the
    # same process or on disk): the compiled first step is then no slower than an eager one.
    assert record["compile_s"] >= 0 and record["measured_speedup"] > 0
    assert record["eager_step_s"] > 0 and record["compiled_step_s"] > 0
    # Compiled steps measured slower than eager send the rest of the run back to eager.
    assert record.get("reverted_to_eager", False) is (record["measured_speedup"] < 1)
    cache = json.loads((tmp_path / "cache" / autocompile.CACHE_FILE).read_text())
    (entry,) = cache.values()
    assert entry["compile_s"] == record["compile_s"]
    # Every training row keeps its step and tokens/s; compiling is not counted as training time.
    rows = [r for r in read_rows(out) if "loss" in r]
    assert [r["step"] for r in rows] == [3, 6, 9, 12, 14]
    assert all(r["tokens_per_s"] > 0 for r in rows)


def test_auto_keeps_a_short_run_eager_and_says_why(data, tmp_path):
    out = tmp_path / "short"
    cfg = train_config(data, out, train__max_steps=STEPS, sample__every=0)
    assert run(cfg, Flags()) == 0
    info = json.loads((out / "run_info.json").read_text())
    record = info["compile"]
    assert record["setting"] == "auto" and record["compile"] is False
    if compiler_available():
        assert record["decided_at_step"] == autocompile.DECIDE_AFTER
        assert "assumed compile 60 s" in record["reason"] and record["eager_step_s"] > 0
    else:
        assert record["reason"] == "no C++ compiler for inductor"
    assert info["linear_kernel"] in ("mkl", "onednn")
    rows = [r for r in read_rows(out) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert all(r["tokens_per_s"] > 0 for r in rows)
