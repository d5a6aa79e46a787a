"""benchmarks/train.py's bookkeeping: the reference and lmforge count the same FLOPs per token
(the issue's 2% rule holds by construction), and only steady-state steps are timed."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from lmforge_testing import REPO_ROOT, require


@pytest.fixture(scope="module")
def bench():
    folder = REPO_ROOT / "benchmarks"
    sys.path.insert(0, str(folder))  # the script imports results_io beside it
    try:
        spec = importlib.util.spec_from_file_location("train_benchmark", folder / "train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def test_reference_and_lmforge_count_the_same_flops(bench):
    require(importlib.util.find_spec("transformers") is not None, "transformers (extra hf)")
    from transformers import GPT2Config, GPT2LMHeadModel

    shape = bench.SHAPE
    config = GPT2Config(
        vocab_size=shape["vocab"],
        n_positions=shape["seq_len"],
        n_embd=shape["d_model"],
        n_layer=shape["n_layers"],
        n_head=shape["n_heads"],
    )
    reference = bench.reference_flops_per_token(GPT2LMHeadModel(config), shape["seq_len"])
    ours = bench.lmforge_flops_per_token()
    assert abs(ours / reference - 1) <= 0.02
    assert ours == reference  # the GPT-2 layout is the same model, parameter for parameter


def _write_run(out, compile_record, steps):
    out.mkdir()
    (out / "run_info.json").write_text(json.dumps({"compile": compile_record}))
    rows = [{"step": s, "loss": 1.0, "tokens_per_s": 100.0 * s, "tokens": 512 * s} for s in steps]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_steady_rows_skip_warm_up_deciding_and_compiling(bench, tmp_path):
    deciding = {"setting": "auto"}
    _write_run(tmp_path / "a", deciding, range(1, 6))
    assert bench._steady_rows(tmp_path / "a") == ([], None)  # not decided yet: nothing steady
    eager = {"setting": "auto", "compile": False, "decided_at_step": 6}
    _write_run(tmp_path / "b", eager, range(1, 10))
    rows, first = bench._steady_rows(tmp_path / "b")
    assert first == 3 and [r["step"] for r in rows] == list(range(3, 10))
    assert all(r["tokens_per_step"] == 512 for r in rows)
    compiling = {"setting": "auto", "compile": True, "decided_at_step": 6}
    _write_run(tmp_path / "c", compiling, range(1, 20))
    assert bench._steady_rows(tmp_path / "c") == ([], None)  # speedup not measured yet
    measured = {**compiling, "compile_s": 30.0, "measured_speedup": 1.4}
    _write_run(tmp_path / "d", measured, range(1, 20))
    rows, first = bench._steady_rows(tmp_path / "d")
    assert first == 6 + 2 + 5 and rows[0]["step"] == first  # after compile and timing steps
