"""Which kernel runs the linear layers while training (`train.linear_kernel = auto|mkl|onednn`).

torch's `F.linear` runs fp32 on MKL's GEMM; on some CPUs oneDNN's linear is much faster (a Zen 5
core: MKL 92 vs oneDNN 209 GFLOP/s, DESIGN.md section 6: MKL keeps to AVX2 on AMD). Inside
`linear_kernel_mode("onednn")` every `F.linear` on a CPU tensor (nn.Linear, LoRA's layers, heads)
runs as `lmforge::onednn_linear`: forward x @ W.T and input gradient dY @ W on oneDNN's linear;
the weight gradient dY.T @ x stays on `torch.mm`, because an inner product reduces over its
operands' contiguous dimension and would need both activations transposed in memory (copies as
large as the activations, costing about what the faster kernel saves), where a GEMM reads them
transposed in place. It intercepts the function, not the modules: modules, their classes and
state-dict keys stay as they are. `auto` reads the machine's cached peaks (`peak.machine_peaks`)
and picks oneDNN only for fp32 compute where its peak is at least `ONEDNN_MARGIN` x MKL's; bf16
autocast keeps torch's own path, which already runs bf16 linears on oneDNN.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from lmforge.errors import ConfigError
from lmforge.train.peak import machine_peaks

log = logging.getLogger(__name__)

LINEAR_KERNELS = ("auto", "mkl", "onednn")
# oneDNN's op has a fixed cost per call (~40 us: primitive lookup) that MKL's GEMM lacks, so auto
# switches only for a clear measured gain, not for a tie within a noisy measurement.
ONEDNN_MARGIN = 1.15
_ROUTED_DTYPES = (torch.float32, torch.bfloat16)


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available()


def choose_linear_kernel(
    setting: str, device: torch.device, dtype: torch.dtype, threads: int
) -> str:
    """`mkl` (torch's F.linear) or `onednn` for `setting` on `device` training in `dtype`.

    `auto` is decided by the measured peaks of this CPU and thread count (cached per CPU): oneDNN
    for fp32 only when its fp32 peak beats MKL's by `ONEDNN_MARGIN`."""
    if setting not in LINEAR_KERNELS:
        raise ConfigError(
            f"train.linear_kernel={setting!r} is not one of {', '.join(LINEAR_KERNELS)}"
        )
    if setting == "onednn" and (device.type != "cpu" or not onednn_available()):
        raise ConfigError(
            f"train.linear_kernel=onednn needs a CPU run with oneDNN (device is {device.type}, "
            f"oneDNN {'available' if onednn_available() else 'missing'}); use linear_kernel=auto"
        )
    if setting != "auto":
        return setting
    if device.type != "cpu" or dtype != torch.float32 or not onednn_available():
        return "mkl"
    rates = machine_peaks(threads).get("float32", {})
    mkl, onednn = rates.get("mkl"), rates.get("onednn")
    if mkl and onednn and onednn >= ONEDNN_MARGIN * mkl:
        return "onednn"
    return "mkl"


def linear_kernel_mode(kernel: str) -> TorchFunctionMode | None:
    """A context manager that routes `F.linear` to `kernel` (None for torch's own path)."""
    if kernel == "mkl":
        return None
    if kernel == "onednn":
        _register_ops()
        return OneDNNLinearMode()
    raise ValueError(f"unknown linear kernel {kernel!r}")


class OneDNNLinearMode(TorchFunctionMode):
    """Every CPU `F.linear` in fp32 (or in bf16 under bf16 autocast) as `lmforge::onednn_linear`;
    all other functions, and linears on other devices or dtypes, run unchanged."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            dtype = _compute_dtype(x)
            if x.device.type == "cpu" and dtype in _ROUTED_DTYPES:
                # Autocast would cast F.linear's inputs below this point; a custom op is not
                # autocast, so the casts are done here (differentiable: grads reach fp32 weights).
                x, weight = x.to(dtype), weight.to(dtype)
                bias = bias.to(dtype) if bias is not None else None
                return torch.ops.lmforge.onednn_linear(x, weight, bias)
        return func(*args, **kwargs)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return x.dtype


# -- the ops ---------------------------------------------------------------------------------------
# Custom ops rather than an autograd.Function: torch.compile keeps a custom op as one opaque call
# (inductor cannot lower mkldnn's linear with an unpacked weight itself), so a compiled model
# keeps the kernel too.


def _onednn_mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T on oneDNN; a: (n, k), b: (m, k)."""
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


def _onednn_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """F.linear(x, weight, bias) on oneDNN, for inputs of any rank >= 2."""
    flat = x.reshape(-1, x.shape[-1])
    out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "none", [], "")
    return out.reshape(*x.shape[:-1], weight.shape[0])


def _fake_mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.new_empty(a.shape[0], b.shape[0])


def _fake_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    x, weight = ctx.saved_tensors
    grad2 = grad.reshape(-1, grad.shape[-1])
    grad_x = grad_w = grad_b = None
    mm_nt = torch.ops.lmforge.onednn_mm_nt
    if ctx.needs_input_grad[0]:  # dX = dY @ W = dY @ (W.T).T (a copy of W only: small)
        grad_x = mm_nt(grad2, weight.t().contiguous()).reshape(x.shape)
    if ctx.needs_input_grad[1]:  # dW = dY.T @ X: a GEMM reads dY transposed in place
        grad_w = torch.mm(grad2.t(), x.reshape(-1, x.shape[-1]))
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_b = grad2.sum(0)
    return grad_x, grad_w, grad_b


@functools.cache
def _register_ops() -> None:
    """Define `lmforge::onednn_linear` and `lmforge::onednn_mm_nt` (once, on first use)."""
    mm_nt = torch.library.custom_op("lmforge::onednn_mm_nt", _onednn_mm_nt, mutates_args=())
    mm_nt.register_fake(_fake_mm_nt)
    linear = torch.library.custom_op("lmforge::onednn_linear", _onednn_linear, mutates_args=())
    linear.register_fake(_fake_linear)
    linear.register_autograd(_backward, setup_context=_setup_context)
