"""Device peak matmul throughput, the denominator of MFU (model FLOPs utilisation).

On a CPU every matmul kernel torch offers (MKL's `torch.mm`, oneDNN's linear) is measured in
fp32 and bf16 on a 2048-cubed matmul with the run's threads, once per CPU (model string +
instruction flags + torch version + threads) and cached in `~/.cache/lmforge/peak_flops.json`
(`LMFORGE_CACHE_DIR` overrides the folder); `train.peak_tflops` sets the peak by hand. MFU = model
FLOPs per token (6N + attention, PaLM appendix B) x tokens/s / the fastest kernel of the dtype in
use; `dtype=auto` picks bf16 only where it measured faster.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    env = os.environ.get("LMFORGE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lmforge"


def device_name(device: torch.device) -> str:
    """A stable name for the hardware: the GPU model, or the CPU model string."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The matmul kernels torch offers on a CPU, measured side by side: MKL's GEMM (`torch.mm`) and
# oneDNN's linear (the kernel behind `nn.LSTM`, inductor's linear and bf16 matmuls). Which is
# faster depends on the CPU: MKL keeps to AVX2 on AMD CPUs, where oneDNN uses AVX-512 (Zen 5 core:
# 92 vs 209 GFLOP/s fp32), so a single-kernel peak misjudges MFU (an LSTM read > 100%).
CPU_BACKENDS = ("mkl", "onednn")
CPU_DTYPES = (torch.float32, torch.bfloat16)
PEAK_CACHE_FILE = "peak_flops.json"
PEAK_SIZE = 2048  # n of the n x n x n matmul, large enough to reach a kernel's steady rate
PROBE_SIZE = 256  # first, small: an emulated dtype (bf16 without AVX-512 bf16) stops here
EMULATED_RATIO = 0.1  # a reduced dtype this much slower than fp32 on the probe is emulated


def _kernel(backend: str) -> Callable[[torch.Tensor, torch.Tensor], Any] | None:
    if backend == "mkl":
        return torch.mm
    if backend == "onednn" and torch.backends.mkldnn.is_available():
        linear = torch.ops.mkldnn._linear_pointwise  # x @ w.T: the same FLOPs as x @ w
        return lambda x, w: linear(x, w, None, "none", [], "")
    return None


def measure_matmul_tflops(
    device: torch.device,
    dtype: torch.dtype,
    seconds: float = 0.5,
    size: int | None = None,
    backend: str | None = None,
) -> float:
    """Achieved TFLOP/s of repeated (n x n) @ (n x n) matmuls in `dtype` on `device`: one
    `backend` ("mkl" or "onednn", CPU only) or, by default, the best of them."""
    n = size or (8192 if device.type == "cuda" else PEAK_SIZE)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    if device.type != "cpu":
        return _rate(torch.matmul, a, b, seconds)
    rates = [
        _rate(kernel, a, b, seconds)
        for name in ((backend,) if backend else CPU_BACKENDS)
        if (kernel := _kernel(name)) is not None
    ]
    if not rates:
        raise ValueError(f"matmul backend {backend!r} is not available in this torch build")
    return max(rates)


def _rate(
    matmul: Callable[[torch.Tensor, torch.Tensor], Any],
    a: torch.Tensor,
    b: torch.Tensor,
    seconds: float,
) -> float:
    n, device = a.size(0), a.device
    matmul(a[:64, :64], b[:64, :64])  # warm-up: thread pools, kernels, allocator
    _sync(device)
    reps, start = 0, time.perf_counter()
    while True:
        matmul(a, b)
        reps += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        # A dtype without native support can take a second per matmul: one rep then suffices.
        if elapsed >= seconds:
            return 2 * n**3 * reps / elapsed / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_cpu_peaks(seconds: float = 0.4) -> dict[str, dict[str, float]]:
    """TFLOP/s per dtype and backend on this CPU with the current threads, e.g.
    `{"float32": {"mkl": 0.19, "onednn": 0.41}, "bfloat16": {...}}` (a few seconds).

    fp32 is always measured at full size. A reduced dtype is first probed on a small matmul beside
    fp32 on the same kernel: when it runs at under a tenth of fp32's rate it is emulated (bf16
    without AVX-512 bf16 or AMX: a full-size matmul would take many seconds) and the probe's rate
    stands. Comparing with fp32 measured just before keeps a busy machine from looking emulated.
    """
    cpu = torch.device("cpu")
    backends = [b for b in CPU_BACKENDS if _kernel(b) is not None]
    peaks: dict[str, dict[str, float]] = {
        "float32": {
            b: measure_matmul_tflops(cpu, torch.float32, seconds, PEAK_SIZE, b) for b in backends
        }
    }
    for dtype in CPU_DTYPES[1:]:
        rates: dict[str, float] = {}
        for backend in backends:
            fp32 = measure_matmul_tflops(cpu, torch.float32, 0.05, PROBE_SIZE, backend)
            probe = measure_matmul_tflops(cpu, dtype, 0.05, PROBE_SIZE, backend)
            emulated = probe < EMULATED_RATIO * fp32
            rates[backend] = (
                probe
                if emulated
                else measure_matmul_tflops(cpu, dtype, seconds, PEAK_SIZE, backend)
            )
        peaks[_dtype_name(dtype)] = rates
    return peaks


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def cpu_key(threads: int) -> str:
    """The cache key of a CPU measurement: model string, kernel-relevant flags, torch, threads."""
    return (
        f"{device_name(torch.device('cpu'))}|flags={','.join(cpu_flags())}"
        f"|torch={torch.__version__}|threads={threads}|probe=3"
    )


def cpu_flags() -> list[str]:
    """The instruction-set flags that decide matmul kernels here (AVX2, AVX-512, bf16, AMX)."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def machine_peaks(threads: int, refresh: bool = False) -> dict[str, dict[str, float]]:
    """`measure_cpu_peaks` for this CPU and thread count, cached in `peak_flops.json` (measured
    once; `refresh` re-measures, e.g. after a measurement on a busy machine read too low)."""
    key = cpu_key(threads)
    table = read_cache(PEAK_CACHE_FILE)
    if key in table and not refresh and isinstance(table[key], dict):
        return table[key]
    log.info("measuring this CPU's matmul peaks for MFU and dtype=auto (once per machine)...")
    peaks = measure_cpu_peaks()
    table[key] = peaks
    write_cache(PEAK_CACHE_FILE, table)
    return peaks


def describe_peaks(peaks: dict[str, dict[str, float]]) -> str:
    """One line: `peak TFLOP/s (2 threads): float32 mkl 0.19 onednn 0.41 | bfloat16 ...`."""
    parts = [
        dtype + " " + " ".join(f"{name} {value:.3g}" for name, value in rates.items())
        for dtype, rates in peaks.items()
    ]
    return " | ".join(parts)


def read_cache(name: str) -> dict[str, Any]:
    """The JSON table `name` in `cache_dir()` ({} when missing or unreadable). The per-CPU
    measurements (peaks, compile costs, attention timings) each keep one such table."""
    try:
        table = json.loads((cache_dir() / name).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return table if isinstance(table, dict) else {}


def write_cache(name: str, table: dict[str, Any]) -> None:
    """Replace the table `name` atomically (temp file + rename); an unwritable cache dir only
    costs a re-measurement next time."""
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1))
        tmp.replace(path)
    except OSError:
        log.debug("could not write the cache %s", path)


def peak_tflops(
    device: torch.device, dtype: torch.dtype, threads: int, refresh: bool = False
) -> float:
    """The MFU denominator: the fastest measured kernel of `dtype` on `device` (cached). On CPU
    that is the faster of MKL and oneDNN at this thread count; on a GPU, torch.matmul."""
    if device.type == "cpu":
        rates = machine_peaks(threads, refresh).get(_dtype_name(dtype))
        if rates:
            return max(rates.values())
    key = f"{device_name(device)}|{device.type}|{dtype}|threads={threads}|torch={torch.__version__}"
    table = read_cache(PEAK_CACHE_FILE)
    if key in table and not refresh and not isinstance(table[key], dict):
        return float(table[key])
    log.info("measuring the %s matmul peak for MFU (once per machine)...", _dtype_name(dtype))
    value = measure_matmul_tflops(device, dtype)
    table[key] = value
    write_cache(PEAK_CACHE_FILE, table)
    return value


def choose_dtype(device: torch.device, threads: int) -> torch.dtype:
    """`dtype=auto`: bf16 autocast where it is fast, else fp32 (fp16 on GPUs without bf16).

    On CPU both matmul peaks are measured (cached): without native bf16 (AVX2-only CPUs) bf16
    matmuls run ~30x *slower* than fp32, so it is picked only when clearly faster.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type != "cpu":
        return torch.float32
    peaks = machine_peaks(threads)
    fp32 = max(peaks["float32"].values())
    bf16 = max(peaks["bfloat16"].values())
    return torch.bfloat16 if bf16 > 1.3 * fp32 else torch.float32
