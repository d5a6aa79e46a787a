"""Peak FLOP/s: every CPU matmul kernel measured per dtype, once per CPU and thread count (cached);
MFU's denominator is the fastest kernel of the dtype; `dtype=auto` picks a dtype from them."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.train import peak
from lmforge.train.peak import (
    choose_dtype,
    cpu_key,
    describe_peaks,
    machine_peaks,
    measure_matmul_tflops,
    peak_tflops,
)

CPU = torch.device("cpu")


@pytest.fixture
def fast_probe(monkeypatch, tmp_path):
    """A small matmul instead of 2048-cubed keeps the test quick; the logic is the same."""
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(peak, "PEAK_SIZE", 256)
    return tmp_path


def test_every_backend_and_dtype_is_measured_once_and_cached(fast_probe):
    peaks = machine_peaks(1)
    assert set(peaks) == {"float32", "bfloat16"}
    assert set(peaks["float32"]) == set(peak.CPU_BACKENDS) and min(peaks["float32"].values()) > 0
    table = json.loads((fast_probe / "peak_flops.json").read_text())
    assert table == {cpu_key(1): peaks}
    assert machine_peaks(1) == peaks  # from the cache: a second measurement would differ
    assert machine_peaks(1, refresh=True) != peaks  # re-measured on request
    fp32 = machine_peaks(1)["float32"]
    assert peak_tflops(CPU, torch.float32, 1) == max(fp32.values())
    line = describe_peaks(machine_peaks(1))
    assert line.startswith("float32 mkl ") and " | bfloat16 " in line
    assert choose_dtype(CPU, 1) in (torch.float32, torch.bfloat16)


def test_the_key_names_the_cpu_its_flags_torch_and_threads():
    key = cpu_key(2)
    assert f"torch={torch.__version__}" in key and key.endswith("threads=2|probe=3")
    assert "flags=" in key and cpu_key(1) != key


def test_one_backend_can_be_measured_alone():
    mkl = measure_matmul_tflops(CPU, torch.float32, seconds=0.05, size=128, backend="mkl")
    assert mkl > 0
    with pytest.raises(ValueError, match="not available"):
        measure_matmul_tflops(CPU, torch.float32, seconds=0.05, size=128, backend="cublas")
