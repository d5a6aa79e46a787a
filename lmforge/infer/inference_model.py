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
"""

from __future__ import annotations

import torch
from torch import nn


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
    model: nn.Module, dtype: torch.dtype = torch.float32, compile: bool = False
) -> nn.Module:
    """`model` in eval mode and `dtype`, its linear weights laid out for eager decoding.

    `compile=True` (the caller compiles the decode step) keeps the row-major layout that the
    compiled kernels read fastest.
    """
    model = model.eval()
    if dtype != torch.float32:
        model = model.to(dtype)  # weights in low precision: half the bytes read per token
    if not compile:
        column_major_linears_(model)
    return model
