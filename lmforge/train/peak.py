"""Device peak matmul throughput, the denominator of MFU (model FLOPs utilisation).

Measured once per machine, device, dtype and thread count with a square matmul, and cached in
`~/.cache/lmforge/peak_flops.json` (`LMFORGE_CACHE_DIR` overrides the folder); `train.peak_tflops`
sets it by hand. MFU = model FLOPs per token (6N + attention, PaLM appendix B) x tokens/s / peak.
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


def measure_matmul_tflops(
    device: torch.device, dtype: torch.dtype, seconds: float = 0.5, size: int | None = None
) -> float:
    """Achieved TFLOP/s of repeated (n x n) @ (n x n) matmuls in `dtype` on `device`.

    On CPU in fp32 the best of MKL (`torch.matmul`) and oneDNN (the kernel behind `nn.LSTM` and
    inductor's linear) counts: MKL's sgemm keeps to AVX2 on AMD CPUs, while oneDNN uses AVX-512
    (on a Zen 5 core: 92 vs 209 GFLOP/s), so an MKL-only peak let the LSTM's MFU exceed 100%."""
    n = size or (8192 if device.type == "cuda" else 768)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = _rate(torch.matmul, a, b, seconds)
    if device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available():
        linear = torch.ops.mkldnn._linear_pointwise  # x @ w.T: the same FLOPs
        best = max(best, _rate(lambda x, w: linear(x, w, None, "none", [], ""), a, b, seconds))
    return best


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


def peak_tflops(
    device: torch.device, dtype: torch.dtype, threads: int, refresh: bool = False
) -> float:
    """The cached peak for this device/dtype/threads, measuring it (about a second) if absent
    or `refresh` (a peak measured while other processes were busy is too low)."""
    # probe=2: fp32 CPU peaks now include oneDNN; older cached values are re-measured.
    key = f"{device_name(device)}|{device.type}|{dtype}|threads={threads}|torch={torch.__version__}"
    key += "|probe=2"
    path = cache_dir() / "peak_flops.json"
    try:
        table = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        table = {}
    if key in table and not refresh:
        return float(table[key])
    log.info("measuring the %s matmul peak for MFU (once per machine)...", str(dtype)[6:])
    value = measure_matmul_tflops(device, dtype)
    table[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1))
        tmp.replace(path)
    except OSError:
        log.debug("could not cache the peak in %s", path)
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
    fp32 = peak_tflops(device, torch.float32, threads)
    bf16 = peak_tflops(device, torch.bfloat16, threads)
    return torch.bfloat16 if bf16 > 1.3 * fp32 else torch.float32
