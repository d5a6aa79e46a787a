"""Compiled decode steps: one new token per row through the GPT as a handful of fused kernels.

Why this exists: a decode step at small batch is a chain of matrix-vector products, so its speed
is the speed of reading every weight once. Eager PyTorch loses twice on a CPU: ~100 small ops
per step each cost dispatch overhead, and MKL's GEMV for one row streams weights at well under
half of what a plain read of the same bytes achieves (on the 2-core Zen 3 machine: ~13 vs
~32 GB/s). `torch.compile` (inductor) removes the per-op overhead by fusing each block into one
C++ kernel; the decompositions below rewrite small-batch matmuls as multiply-and-sum reductions
that inductor fuses with their neighbours and vectorises, reading each weight row once for all
rows of the batch. `benchmarks/generate.py` measures the effect (eager vs compiled rows).

Only the decode step (T == 1) is compiled; prefill stays eager (its length changes per prompt).
Shapes are dynamic (cache length and size) except the batch size, so a job compiles once per
batch size and cache layout (with or without pads), not once per step. The first compile of a
model shape takes tens of seconds; inductor caches it on disk for later processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lmforge.models.gpt import GPT

log = logging.getLogger(__name__)

DecodeStep = Callable[[torch.Tensor, Any], torch.Tensor]

# Matmuls with at most this many rows become reductions; larger ones stay MKL GEMMs. Measured on
# a 2-core Zen 5 machine (6L/384 GPT, compiled step at ~300 cached tokens): rows 1/2/4/8 take
# 1.3/1.7/3.8/6.4 ms as reductions against -/4.9/5.9/6.3 ms as MKL GEMMs.
SMALL_BATCH = 8


def compile_decode_step(model: nn.Module) -> DecodeStep | None:
    """`step(tokens (B, 1), cache) -> logits (B, V)`, compiled for the model's device.

    None for models that have nothing to gain (the LSTM's step is one fused oneDNN/cuDNN
    kernel already): callers then decode eagerly, without asking which model they hold.
    """
    if not isinstance(model, GPT):
        return None

    def step(tokens: torch.Tensor, cache: Any) -> torch.Tensor:
        return model(tokens, cache=cache)[:, -1]

    device = next(model.parameters()).device
    backend = _cpu_backend if device.type == "cpu" and _private_inductor_apis() else "inductor"
    compiled = torch.compile(
        step,
        backend=backend,
        dynamic=True,
        # Weights are fixed while a job decodes; guarding every parameter costs ~0.3 ms a step.
        options={"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe},
    )

    def static_batch_step(tokens: torch.Tensor, cache: Any) -> torch.Tensor:
        # The batch size stays static so that the small-batch rewrite below can apply.
        torch._dynamo.mark_static(tokens, 0)
        return compiled(tokens, cache)

    return static_batch_step


def _private_inductor_apis() -> bool:
    """Whether the inductor internals the small-batch rewrite uses exist in this torch (they are
    private and may move between releases; without them decoding compiles with plain inductor)."""
    try:
        from torch._inductor.compile_fx import compile_fx  # noqa: F401
        from torch._inductor.decomposition import select_decomp_table  # noqa: F401
    except ImportError:
        log.warning(
            "torch %s lacks the inductor internals of lmforge's small-batch decode rewrite; "
            "compiling with plain inductor (slower at batch > 1)",
            torch.__version__,
        )
        return False
    return hasattr(torch._functorch.config, "enable_autograd_cache")


def _cpu_backend(graph: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
    """Inductor with the small-batch matmul rewrite and a C++ wrapper (less per-call Python)."""
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    aten = torch.ops.aten
    table = dict(select_decomp_table())
    table[aten.mm.default] = _mm_as_reduction
    table[aten.addmm.default] = _addmm_as_reduction
    # AOTAutograd's cache is keyed before decompositions run, so it could hand back a graph
    # compiled without this rewrite; inductor's own cache (keyed after them) stays on.
    with torch._functorch.config.patch(enable_autograd_cache=False):
        return compile_fx(
            graph, example_inputs, decompositions=table, config_patches={"cpp_wrapper": True}
        )


def _is_small_batch(rows: Any) -> bool:
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    return any(statically_known_true(rows == m) for m in range(1, SMALL_BATCH + 1))


def _reduce(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (M, K) @ b (K, N) as one sum_k per row of `a`. `b` is a Linear's weight transposed, so
    `b.t()` is the (N, K) weight in memory order, read row after row by each reduction.

    One reduction per row, not one (N, M, K) reduction for all rows: inductor loops the latter
    row-outer with poor vectorisation (batch 2: 14 ms a step instead of 1.7). A layer's weights
    fit in L3, so the second and later rows read them from cache, not memory."""
    rows = [(b.t() * a[i : i + 1]).sum(-1) for i in range(a.size(0))]  # each (N,)
    return torch.stack(rows)  # (M, N)


def _mm_as_reduction(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _reduce(a, b) if _is_small_batch(a.size(0)) else NotImplemented


def _addmm_as_reduction(
    bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta: float = 1, alpha: float = 1
) -> torch.Tensor:
    if beta != 1 or alpha != 1 or not _is_small_batch(a.size(0)):
        return NotImplemented
    return bias + _reduce(a, b)
