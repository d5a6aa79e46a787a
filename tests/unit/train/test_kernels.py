"""`train.linear_kernel`: linears through oneDNN equal torch's own path (values and gradients),
leave modules and state-dict keys alone, reach LoRA's layers, and `auto` follows the cached
measurement of this CPU."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from lmforge_testing import require

from lmforge.errors import ConfigError
from lmforge.models import build_model
from lmforge.models.config import GPTConfig
from lmforge.models.lora import LoRASpec, apply_lora
from lmforge.train import kernels
from lmforge.train.kernels import choose_linear_kernel, linear_kernel_mode
from lmforge.train.peak import cpu_key

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _onednn():
    require(kernels.onednn_available(), "torch built without oneDNN")


def _loss_and_grads(model, tokens, kernel, dtype=torch.float32):
    model.zero_grad(set_to_none=True)
    mode = linear_kernel_mode(kernel)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        if mode is None:
            logits = model(tokens)
        else:
            with mode:
                logits = model(tokens)
    loss = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.fixture
def gpt():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=2, n_heads=2, d_model=32, max_seq_len=16, bias=True)
    return build_model(cfg, 50).train()


def test_onednn_linear_equals_torch_linear_forward_and_backward(gpt):
    tokens = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(1))
    keys = list(gpt.state_dict())
    classes = [type(m) for m in gpt.modules()]
    ref_loss, ref_grads = _loss_and_grads(gpt, tokens, "mkl")
    loss, grads = _loss_and_grads(gpt, tokens, "onednn")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and any("bias" in n for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # The kernel is chosen per call, the model is untouched.
    assert list(gpt.state_dict()) == keys and [type(m) for m in gpt.modules()] == classes


def test_the_op_is_really_used_and_handles_any_rank():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 8, requires_grad=True)
    w, b = torch.randn(5, 8, requires_grad=True), torch.randn(5, requires_grad=True)
    mode = linear_kernel_mode("onednn")
    with mode:
        y = F.linear(x, w, b)
    assert y.shape == (2, 3, 4, 5) and y.grad_fn is not None
    assert "lmforge_onednn_linear" in y.grad_fn.name()  # not MmBackward0/AddmmBackward0
    torch.testing.assert_close(y, x @ w.T + b)
    y.square().sum().backward()
    gx, gw, gb = x.grad, w.grad, b.grad
    x.grad = w.grad = b.grad = None
    (x @ w.T + b).square().sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gb, b.grad)


def test_bf16_autocast_through_onednn_keeps_fp32_master_gradients(gpt):
    tokens = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(2))
    ref_loss, ref_grads = _loss_and_grads(gpt, tokens, "mkl", torch.bfloat16)
    loss, grads = _loss_and_grads(gpt, tokens, "onednn", torch.bfloat16)
    torch.testing.assert_close(loss, ref_loss, rtol=2e-2, atol=2e-2)
    for name, grad in grads.items():
        assert grad.dtype == torch.float32, name
        scale = ref_grads[name].abs().max().item() + 1e-6
        assert (grad - ref_grads[name]).abs().max().item() <= 0.1 * scale, name


def test_lora_layers_go_through_the_kernel_too(gpt):
    apply_lora(gpt, LoRASpec(rank=2, alpha=4.0, targets=("q_proj", "v_proj")))
    for name, p in gpt.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # a fresh B is zero: its A would get no gradient
    tokens = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(3))
    ref_loss, ref_grads = _loss_and_grads(gpt, tokens, "mkl")
    loss, grads = _loss_and_grads(gpt, tokens, "onednn")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    lora = [n for n in grads if "lora_" in n]
    assert lora
    for name in lora:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def _cache(tmp_path, monkeypatch, fp32: dict[str, float]) -> None:
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    table = {cpu_key(1): {"float32": fp32, "bfloat16": {"mkl": 1.0, "onednn": 5.0}}}
    (tmp_path / "peak_flops.json").write_text(json.dumps(table))


def test_auto_follows_the_cached_measurement(tmp_path, monkeypatch):
    _cache(tmp_path, monkeypatch, {"mkl": 0.09, "onednn": 0.21})  # a Zen 5 core
    assert choose_linear_kernel("auto", CPU, torch.float32, 1) == "onednn"
    # bf16 autocast keeps torch's path (its bf16 linears are oneDNN's already).
    assert choose_linear_kernel("auto", CPU, torch.bfloat16, 1) == "mkl"
    _cache(tmp_path, monkeypatch, {"mkl": 0.30, "onednn": 0.28})  # this Xeon: a tie
    assert choose_linear_kernel("auto", CPU, torch.float32, 1) == "mkl"
    _cache(tmp_path, monkeypatch, {"mkl": 0.20, "onednn": 0.22})  # inside the margin
    assert choose_linear_kernel("auto", CPU, torch.float32, 1) == "mkl"


def test_explicit_settings_and_bad_ones(tmp_path, monkeypatch):
    _cache(tmp_path, monkeypatch, {"mkl": 0.30, "onednn": 0.10})
    assert choose_linear_kernel("onednn", CPU, torch.float32, 1) == "onednn"
    assert choose_linear_kernel("mkl", CPU, torch.float32, 1) == "mkl"
    assert choose_linear_kernel("auto", torch.device("cuda"), torch.float32, 1) == "mkl"
    with pytest.raises(ConfigError, match="linear_kernel=onednn needs a CPU"):
        choose_linear_kernel("onednn", torch.device("cuda"), torch.float32, 1)
    with pytest.raises(ConfigError, match="'cublas' is not one of auto, mkl, onednn"):
        choose_linear_kernel("cublas", CPU, torch.float32, 1)
    assert linear_kernel_mode("mkl") is None
