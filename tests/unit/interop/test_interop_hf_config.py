"""Config translation and key maps (no `transformers` needed): both directions, and refusals."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import CheckpointError, ConfigError
from lmforge.interop import hf
from lmforge.models import GPTConfig, LSTMConfig, build_model

SHAPE = {"n_layers": 2, "n_heads": 4, "d_model": 32, "max_seq_len": 16}
LLAMA = {"pos_emb": "rope", "norm": "rmsnorm", "mlp": "swiglu"}
GPT2 = {"pos_emb": "learned", "norm": "layernorm", "mlp": "gelu"}


@pytest.mark.parametrize(
    ("family", "options"),
    [
        ("llama", {**LLAMA, "n_kv_heads": 2, "rope_theta": 500.0, "tie_embeddings": True}),
        ("llama", {**LLAMA, "bias": True, "d_ff": 40, "norm_eps": 1e-6}),
        ("gpt2", {**GPT2, "bias": True, "tie_embeddings": True}),
        ("gpt2", {**GPT2, "bias": True, "d_ff": 72, "dropout": 0.1}),
    ],
)
def test_config_round_trip(family, options):
    cfg = GPTConfig(**SHAPE, **options)
    hf_config = hf.to_hf_config(cfg, 50, bos_id=49, eos_id=49, pad_id=None)
    assert hf.family_of_hf_config(hf_config) == family
    back = hf.from_hf_config(hf_config)
    # d_ff comes back resolved; everything that defines the function is preserved.
    assert back.model_dump(exclude={"d_ff", "zero_init_output"}) == cfg.model_dump(
        exclude={"d_ff", "zero_init_output"}
    )
    assert back.ff_dim == cfg.ff_dim


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({**LLAMA, "norm": "layernorm"}, "model.norm='layernorm'"),
        ({**LLAMA, "mlp": "gelu"}, "model.mlp='gelu'"),
        ({**GPT2, "norm": "rmsnorm", "mlp": "swiglu"}, "model.norm='rmsnorm', model.mlp='swiglu'"),
        ({**GPT2, "n_kv_heads": 2}, "n_kv_heads=2"),
    ],
)
def test_inexpressible_options_are_named(options, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        hf.hf_family(GPTConfig(**SHAPE, **options))


def test_lstm_has_no_hf_family():
    with pytest.raises(ConfigError, match="model.kind='lstm'"):
        hf.hf_family(LSTMConfig())


def _llama_json(**changes):
    cfg = GPTConfig(**SHAPE, **LLAMA)
    return {**hf.to_hf_config(cfg, 50, bos_id=None, eos_id=None, pad_id=None), **changes}


def _gpt2_json(**changes):
    cfg = GPTConfig(**SHAPE, **GPT2, bias=True)
    return {**hf.to_hf_config(cfg, 50, bos_id=None, eos_id=None, pad_id=None), **changes}


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (_llama_json(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling"),
        (_llama_json(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4}), "rope_parameters"),
        (_llama_json(hidden_act="gelu"), "hidden_act='gelu'"),
        (_llama_json(head_dim=16), "head_dim=16"),
        (_gpt2_json(activation_function="relu"), "activation_function='relu'"),
        (_gpt2_json(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
        (_llama_json(model_type="mistral"), "model_type='mistral'"),
        ({"model_type": "bert", "architectures": ["BertModel"]}, "model_type='bert'"),
        ({"model_type": "gpt2", "n_embd": 32, "n_head": 4}, "lacks the key 'n_layer'"),
        (_gpt2_json(n_head=5), "d_model=32 is not divisible by n_heads=5"),
    ],
)
def test_unsupported_hf_options_are_named(config, named):
    with pytest.raises(CheckpointError, match=named):
        hf.from_hf_config(config)


def test_transformers_4_and_5_rope_theta_spellings():
    old = _llama_json(rope_theta=1234.0, rope_scaling=None)
    del old["rope_parameters"]
    new = _llama_json(rope_parameters={"rope_type": "default", "rope_theta": 1234.0})
    del new["rope_theta"]
    assert hf.from_hf_config(old).rope_theta == hf.from_hf_config(new).rope_theta == 1234.0


def _random_state(cfg: GPTConfig) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = build_model(cfg, 50)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param))
    return model, model.state_dict()


@pytest.mark.parametrize(
    "options",
    [
        {**LLAMA, "n_kv_heads": 2},
        {**LLAMA, "bias": True, "tie_embeddings": True},
        {**GPT2, "bias": True, "tie_embeddings": True},
        {**GPT2, "bias": False},
    ],
)
def test_state_dict_round_trip_is_exact(options):
    cfg = GPTConfig(**SHAPE, **options)
    model, state = _random_state(cfg)
    exported = hf.to_hf_state_dict(state, cfg)
    assert all(t.is_contiguous() for t in exported.values())
    assert ("lm_head.weight" in exported) == (not cfg.tie_embeddings)
    # Back into a model of the family's shape (GPT-2 always has biases: zero where we had none).
    back_cfg = hf.from_hf_config(hf.to_hf_config(cfg, 50, bos_id=None, eos_id=None, pad_id=None))
    expected = {k: v.shape for k, v in build_model(back_cfg, 50).state_dict().items()}
    back = hf.from_hf_state_dict(exported, back_cfg, expected)
    for key, tensor in state.items():
        assert torch.equal(back[key], tensor), key
    for key in set(back) - set(state):
        assert key.endswith("bias") and not back[key].any(), key


def test_gpt2_layout_uses_conv1d_transposes():
    cfg = GPTConfig(**SHAPE, **GPT2, bias=True, d_ff=64)
    _, state = _random_state(cfg)
    out = hf.to_hf_state_dict(state, cfg)
    c_attn = out["transformer.h.0.attn.c_attn.weight"]
    assert c_attn.shape == (32, 96)  # Conv1D: (in, 3 * out)
    assert torch.equal(c_attn[:, 32:64], state["blocks.0.attn.k_proj.weight"].t())
    assert out["transformer.h.1.mlp.c_fc.weight"].shape == (32, 64)


def test_unmapped_weight_is_refused():
    cfg = GPTConfig(**SHAPE, **LLAMA)
    _, state = _random_state(cfg)
    state["blocks.0.attn.extra.weight"] = torch.ones(3)
    with pytest.raises(CheckpointError, match="blocks.0.attn.extra.weight"):
        hf.to_hf_state_dict(state, cfg)


def test_wrong_shapes_and_missing_weights_are_named():
    cfg = GPTConfig(**SHAPE, **LLAMA)
    _, state = _random_state(cfg)
    exported = hf.to_hf_state_dict(state, cfg)
    expected = {k: v.shape for k, v in state.items()}
    bad = dict(exported, **{"model.norm.weight": torch.ones(7)})
    with pytest.raises(CheckpointError, match=r"norm.weight has shape \(7,\)"):
        hf.from_hf_state_dict(bad, cfg, expected)
    del exported["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(CheckpointError, match="blocks.1.mlp.up_proj.weight"):
        hf.from_hf_state_dict(exported, cfg, expected)
