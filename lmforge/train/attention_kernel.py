"""Which kernel runs causal attention while training (`train.attention_kernel = auto|sdpa|math`).

`sdpa` is torch's fused `F.scaled_dot_product_attention` (flash attention on CPUs); `math` is the
same attention as two matmuls and a softmax (`models.gpt.attend_math`), which torch.compile fuses
like any other ops. Neither wins everywhere: on a Zen 4 core pair at the shakespeare_char recipe's
shape (batch 24, 2 heads of 64, 128 positions) the fused kernel's forward + backward takes 16 ms
under bf16 autocast and the matmuls 6 ms, while in fp32 the fused kernel is the faster. So `auto`
measures both at the run's own shape and dtype, once per CPU (`peak.cpu_key`) and shape, cached in
`~/.cache/lmforge/attention_kernel.json` beside the matmul peaks, and picks `math` only for a clear
gain. GPUs keep SDPA (their fused kernels are the fast path). Only GPT-style models have attention;
for others the setting is moot and reported as `sdpa`.
"""

from __future__ import annotations

import logging
import time

import torch

from lmforge.errors import ConfigError
from lmforge.models.gpt import attend, attend_math
from lmforge.runtime import autocast
from lmforge.train.peak import cpu_key, read_cache, write_cache

log = logging.getLogger(__name__)

ATTENTION_KERNELS = ("auto", "sdpa", "math")
# The matmul path must beat the fused kernel by this much: a tie within the measurement's noise
# keeps torch's default.
MATH_MARGIN = 1.15
CACHE_FILE = "attention_kernel.json"
MATH_VERSION = 2  # part of the cache key: a changed `attend_math` is measured afresh
MEASURE_SECONDS = 0.25  # per kernel, after warm-up


def attention_shape(model: torch.nn.Module) -> tuple[int, int, int] | None:
    """(query heads, key/value heads, head dim) of a GPT-style model (or a head wrapping one);
    None for a model without attention (the LSTM)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "n_heads") or not hasattr(config, "head_dim"):
        return None
    kv_heads = getattr(config, "kv_heads", config.n_heads)
    return int(config.n_heads), int(kv_heads), int(config.head_dim)


def choose_attention_kernel(
    setting: str,
    model: torch.nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    batch: int,
    seq_len: int,
    threads: int,
) -> str:
    """`sdpa` or `math` for `setting`; `auto` measures both at (batch, heads, seq_len, head dim)
    in `dtype` on this CPU (cached per CPU, torch version, threads, shape and dtype)."""
    if setting not in ATTENTION_KERNELS:
        raise ConfigError(
            f"train.attention_kernel={setting!r} is not one of {', '.join(ATTENTION_KERNELS)}"
        )
    shape = attention_shape(model)
    if shape is None:
        return "sdpa"  # nothing to choose: the model has no attention
    if setting != "auto":
        return setting
    if device.type != "cpu" or seq_len < 2:
        return "sdpa"
    heads, kv_heads, head_dim = shape
    key = (
        f"{cpu_key(threads)}|{str(dtype).removeprefix('torch.')}"
        f"|B={batch}|H={heads}|Hkv={kv_heads}|T={seq_len}|D={head_dim}|math={MATH_VERSION}"
    )
    table = read_cache(CACHE_FILE)
    timings = table.get(key)
    if not isinstance(timings, dict) or not {"sdpa", "math"} <= timings.keys():
        timings = {
            kernel: measure_attention_ms(kernel, batch, heads, kv_heads, seq_len, head_dim, dtype)
            for kernel in ("sdpa", "math")
        }
        table[key] = timings
        write_cache(CACHE_FILE, table)
    choice = "math" if timings["math"] * MATH_MARGIN <= timings["sdpa"] else "sdpa"
    log.info(
        "attention: %s (train.attention_kernel=auto; forward+backward at this shape: "
        "sdpa %.1f ms, math %.1f ms)",
        choice,
        timings["sdpa"],
        timings["math"],
    )
    return choice


def measure_attention_ms(
    kernel: str,
    batch: int,
    heads: int,
    kv_heads: int,
    seq_len: int,
    head_dim: int,
    dtype: torch.dtype,
) -> float:
    """Median milliseconds of one forward + backward of causal attention by `kernel` on the CPU,
    inputs in `dtype` as the projections give them under autocast."""
    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(batch, heads, seq_len, head_dim, generator=generator)
    k, v = (torch.randn(batch, kv_heads, seq_len, head_dim, generator=generator) for _ in "kv")
    q, k, v = (t.to(dtype).requires_grad_() for t in (q, k, v))

    def step() -> None:
        with autocast(cpu, dtype):
            out = attend(q, k, v, None, 0.0) if kernel == "sdpa" else attend_math(q, k, v, 0.0)
        out.backward(torch.ones_like(out))

    for _ in range(2):  # warm-up: first calls allocate and pick primitives
        step()
    durations: list[float] = []
    deadline = time.perf_counter() + MEASURE_SECONDS
    while len(durations) < 3 or (time.perf_counter() < deadline and len(durations) < 50):
        start = time.perf_counter()
        step()
        durations.append(time.perf_counter() - start)
    durations.sort()
    return 1000 * durations[len(durations) // 2]
