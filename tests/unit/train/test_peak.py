"""Peak FLOP/s: measured once, cached per machine/dtype/threads; `dtype=auto` picks a dtype."""

from __future__ import annotations

import json

import torch

from lmforge.train.peak import choose_dtype, measure_matmul_tflops, peak_tflops

CPU = torch.device("cpu")


def test_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    assert measure_matmul_tflops(CPU, torch.float32, seconds=0.05, size=128) > 0
    first = peak_tflops(CPU, torch.float32, 1)
    table = json.loads((tmp_path / "peak_flops.json").read_text())
    assert list(table.values()) == [first]
    assert peak_tflops(CPU, torch.float32, 1) == first  # from the cache, not re-measured
    assert choose_dtype(CPU, 1) in (torch.float32, torch.bfloat16)
