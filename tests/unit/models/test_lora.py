"""LoRA layers: a fresh adapter changes nothing (bit for bit), base keys stay, the adapted model
equals its merge, only adapters train, and targets that match nothing are named."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.models.lora import (
    LoRALinear,
    LoRASpec,
    adapter_parameters,
    apply_lora,
    merge_lora,
    resolve_targets,
)

LAYOUTS = {
    "llama": GPTConfig(n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, max_seq_len=16),
    "gpt2": GPTConfig(
        n_layers=2,
        n_heads=4,
        d_model=32,
        max_seq_len=16,
        pos_emb="learned",
        norm="layernorm",
        mlp="gelu",
        bias=True,
        tie_embeddings=True,
    ),
}
TOKENS = torch.randint(0, 40, (3, 12), generator=torch.Generator().manual_seed(0))


def _model(layout: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(LAYOUTS[layout], 40).eval()


@pytest.mark.parametrize("layout", ["llama", "gpt2"])
@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ("all-linear",)])
@torch.no_grad()
def test_fresh_adapter_leaves_logits_bit_identical(layout, targets):
    torch.set_num_threads(1)
    model = _model(layout)
    before = model(TOKENS)
    keys = set(model.state_dict())
    names = apply_lora(model, LoRASpec(4, 8.0, 0.0, targets))
    assert torch.equal(model(TOKENS), before)
    # The base's keys are unchanged; each adapted layer adds exactly lora_A and lora_B.
    added = set(model.state_dict()) - keys
    assert keys <= set(model.state_dict())
    assert added == {f"{n}.lora_{p}" for n in names for p in "AB"}
    if targets == ("all-linear",):
        assert len(names) == 2 * (7 if layout == "llama" else 6)  # lm_head is never adapted
    else:
        assert sorted({n.split(".")[-1] for n in names}) == ["q_proj", "v_proj"]


@pytest.mark.parametrize("layout", ["llama", "gpt2"])
@torch.no_grad()
def test_adapted_model_equals_its_merge(layout):
    model = _model(layout)
    apply_lora(model, LoRASpec(4, 16.0, 0.0, ("all-linear",)))
    for p in adapter_parameters(model):
        p.normal_(0, 0.3)  # a trained-looking adapter: B non-zero
    adapted = model(TOKENS)
    base = _model(layout)(TOKENS)
    assert (adapted - base).abs().max() > 1e-2  # the adapter does something
    merged = merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert set(merged.state_dict()) == set(_model(layout).state_dict())
    assert torch.allclose(merged(TOKENS), adapted, atol=1e-5)


def test_only_adapters_train_and_init_follows_peft():
    model = _model("llama")
    apply_lora(model, LoRASpec(8, 16.0))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    layer = model.blocks[0].attn.q_proj
    assert isinstance(layer, LoRALinear) and layer.scale == 2.0
    assert torch.count_nonzero(layer.lora_B) == 0 and layer.lora_A.abs().max() > 0
    # Kaiming-uniform with a=sqrt(5): bound 1/sqrt(fan_in).
    assert layer.lora_A.abs().max() <= 1 / 32**0.5
    assert layer.weight is not None and layer.lora_A.shape == (8, 32)
    loss = model(TOKENS).logsumexp(-1).mean()
    loss.backward()
    assert layer.lora_B.grad is not None and layer.weight.grad is None


def test_targets_that_match_nothing_are_named():
    with pytest.raises(ConfigError, match="'c_attn' is no linear layer.*q_proj"):
        resolve_targets(_model("gpt2"), ["q_proj", "c_attn"])
    with pytest.raises(ConfigError, match="'gate_proj'"):
        resolve_targets(_model("gpt2"), ["gate_proj"])  # GELU MLP: no gate
    lstm = build_model(LSTMConfig(n_layers=1, d_model=16, d_hidden=16), 40)
    with pytest.raises(ConfigError, match="matches no linear layer"):
        resolve_targets(lstm, ["all-linear"])
    with pytest.raises(ConfigError, match="rank=0"):
        apply_lora(_model("llama"), LoRASpec(0, 1.0))


@pytest.mark.parametrize("bias", [False, True])
def test_the_in_place_update_has_the_reference_values_and_gradients(bias):
    """A (B, T, in) input takes the batched-GEMM path (in place without a bias; with one, F.linear
    returns a view and the update is out of place); the same rows as a 2-D input take the plain
    `out + (B A x) * scale` path. Outputs and every gradient agree."""
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(16, 24, bias=bias), rank=4, alpha=8.0)
    torch.nn.init.normal_(layer.lora_B)  # a trained adapter, not the zero start
    x = torch.randn(3, 5, 16, requires_grad=True)
    grads = []
    for inp in (x, x.reshape(15, 16)):
        layer.zero_grad()
        out = layer(inp)
        (out.reshape(15, 24) * torch.arange(24.0)).sum().backward()
        grads.append((out.reshape(15, 24), layer.lora_A.grad, layer.lora_B.grad, layer.weight.grad))
    x_grad_3d = torch.autograd.grad(layer(x).sum(), x)[0]
    x_grad_2d = torch.autograd.grad(layer(x.reshape(15, 16)).sum(), x)[0]
    for batched, flat in zip(*grads, strict=True):
        torch.testing.assert_close(batched, flat, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_grad_3d, x_grad_2d, rtol=1e-5, atol=1e-6)


def test_the_update_runs_under_bf16_autocast_like_its_merge():
    """`dtype=auto` trains under bf16 autocast: the base output is bf16 while the adapter's
    parameters stay fp32, and the in-place update must still run, train and match the merge."""
    torch.manual_seed(0)
    # No bias, as the GPT's projections: F.linear then returns a fresh tensor, the in-place path.
    layer = LoRALinear(torch.nn.Linear(16, 24, bias=False), rank=4, alpha=8.0)
    torch.nn.init.normal_(layer.lora_B)
    layer.weight.requires_grad_(False)  # frozen, as LoRA training leaves it
    x = torch.randn(3, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and layer.lora_B.grad.dtype == torch.float32
    merged = torch.nn.functional.linear(x, layer.merged_weight(), layer.bias)
    torch.testing.assert_close(out.float(), merged, rtol=3e-2, atol=3e-2)
