"""A loaded model made ready for decoding: eval mode, the chosen dtype, decode-friendly weights.

`lmforge generate` and `lmforge serve` both load a run and decode from it; this is the one place
that says how its weights are laid out for that, so both decode the same bits.

Why column-major linear weights: a decode step multiplies a few rows by every weight matrix.
`nn.Linear` stores W as (out, in) row-major, so `F.linear` asks MKL for x @ W^T (an "NT" GEMM),
and MKL's NT kernels for a handful of rows run far below its NN ones. Keeping W's memory
transposed (the parameter is still an (out, in) tensor of the same module under the same
state-dict key; only its strides change) hands MKL x @ Wt with Wt contiguous. Measured on the
2-core Xeon (AVX-512), the 36 linears of the 6-layer/384 GPT, one thread, fp32: 1 row 1.64 vs
1.61 ms, 8 rows 3.35 vs 1.91 ms, 16 rows 4.08 vs 2.77 ms (row- vs column-major); bf16 weights
gain nothing (2.19 vs 2.46 ms at 1 row), and a compiled step reads weights row by row in its own
kernels, so both keep the layout they have. `benchmarks/serve.py` times the model's decode step
in both layouts on every machine it runs on.

Why oneDNN for several rows, where it measures faster: on the 2-core AMD Zen 4 (AVX-512, no
AMX), MKL's fp32 GEMM is slow for 2-16 rows in either layout, while oneDNN's linear on a weight
packed in its own blocked format ran 1.2-1.6x faster there (one 384x1152 linear, one thread:
2 rows 73 vs 44 us, 8 rows 122 vs 102 us; one row 36 vs 43 us, so a single row stays on MKL).
`multi_row_kernel="auto"` times both on the model's own linear shapes at start-up and keeps the
packed copy only where it wins; the copy doubles the memory of the linear weights, and the
parameters (and so every state-dict key and value) stay as they are.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import LinearKernelName

log = logging.getLogger(__name__)

# Inputs of 2..MAX_PACKED_ROWS rows use the packed oneDNN weight: decode batches. Longer inputs
# (prefills) stay on MKL, where it was not measured slower.
MAX_PACKED_ROWS = 64


def column_major_linears_(model: nn.Module) -> int:
    """Re-lay every CPU fp32 `nn.Linear` weight as column-major, in place; return how many.

    For models that only decode from here on: a checkpoint written afterwards needs
    `.contiguous()` tensors (safetensors refuses strided ones). Tied weights (an embedding that
    is also the output head) are one parameter, re-laid once; embedding lookups read it fine.
    """
    done = 0
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if (
                isinstance(module, nn.Linear)
                and weight is not None
                and weight.device.type == "cpu"
                and weight.dtype == torch.float32
                and weight.is_contiguous()
            ):
                weight.data = weight.data.t().contiguous().t()
                done += 1
    return done


def prepare_for_decoding(
    model: nn.Module,
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
    multi_row_kernel: LinearKernelName = "auto",
) -> nn.Module:
    """`model` in eval mode and `dtype`, its linear weights laid out for eager decoding.

    `compile=True` (the caller compiles the decode step) keeps the row-major layout that the
    compiled kernels read fastest. `multi_row_kernel` says which kernel runs fp32 linears on
    2..64 rows (decode batches): `mkl` (torch's own), `onednn` (a packed weight copy), or
    `auto`, the faster of the two measured here on the model's shapes.
    """
    model = model.eval()
    if dtype != torch.float32:
        model = model.to(dtype)  # weights in low precision: half the bytes read per token
    if not compile:
        column_major_linears_(model)
        if multi_row_kernel != "mkl" and _onednn_available():
            linears = _cpu_fp32_linears(model)
            if multi_row_kernel == "onednn" or _onednn_faster(linears):
                for module in linears:
                    _pack_for_rows_(module)
                log.info("decoding: oneDNN linears (packed weights) for 2-%d rows", MAX_PACKED_ROWS)
    return model


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_reorder_linear_weight"
    )


def _cpu_fp32_linears(model: nn.Module) -> list[nn.Linear]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.Linear)
        and m.weight.device.type == "cpu"
        and m.weight.dtype == torch.float32
    ]


def _packed_linear(
    x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1])
    out = torch.ops.mkldnn._linear_pointwise(flat, packed, bias, "none", [], "")
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _pack_for_rows_(module: nn.Linear, rows: int = 8) -> None:
    """Give `module` a oneDNN-packed copy of its weight, used for inputs of 2..64 rows."""
    packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), rows)

    def forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        n_rows = x.numel() // x.shape[-1]
        if 2 <= n_rows <= MAX_PACKED_ROWS and not torch.is_grad_enabled():
            return _packed_linear(x, packed, self.bias)
        return F.linear(x, self.weight, self.bias)

    module.forward = types.MethodType(forward, module)  # the instance's, not the class's


def _onednn_faster(linears: list[nn.Linear], rows: int = 8, repeats: int = 5) -> bool:
    """Whether packed oneDNN runs these linears on `rows` rows faster than MKL (best of
    `repeats`; one layer of each distinct shape, so start-up stays in milliseconds)."""
    if not linears:
        return False
    shapes = {tuple(m.weight.shape): m for m in linears}
    with torch.inference_mode():
        cases = []
        for module in shapes.values():
            x = torch.randn(rows, module.in_features)
            packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), rows)
            cases.append((x, module, packed))

        def best(run: Callable[[], None]) -> float:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(10):
                    run()
                times.append(time.perf_counter() - start)
            return min(times)

        def mkl() -> None:
            for x, module, _ in cases:
                F.linear(x, module.weight, module.bias)

        def onednn() -> None:
            for x, module, packed in cases:
                _packed_linear(x, packed, module.bias)

        mkl(), onednn()  # warm-up
        t_mkl, t_onednn = best(mkl), best(onednn)
    log.info(
        "decoding: %d-row linears %.0f us on MKL, %.0f us on oneDNN (packed)",
        rows, 1e5 * t_mkl, 1e5 * t_onednn,
    )  # fmt: skip
    return t_onednn < 0.95 * t_mkl
