"""The two reference settings compute exactly what Hugging Face's models compute.

Tiny random HF models are built locally (no hub); their weights are copied into ours with a
minimal map kept here on purpose (the real, two-way map lives in `lmforge/interop/hf.py`).
"""

from __future__ import annotations

import importlib.util

import torch
from lmforge_testing import require

from lmforge.models import GPTConfig, build_model

VOCAB, LAYERS, HEADS, WIDTH, SEQ = 64, 2, 4, 32, 16


def _transformers():
    require(importlib.util.find_spec("transformers") is not None, "transformers not installed")
    import transformers

    return transformers


def _copy(ours: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    missing, unexpected = ours.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if ours.config.tie_embeddings else set()
    assert set(missing) <= tied and not unexpected, (missing, unexpected)


def test_rope_rmsnorm_swiglu_equals_llama():
    transformers = _transformers()
    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        intermediate_size=80,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
        rms_norm_eps=1e-5,
        rope_theta=500.0,
        tie_word_embeddings=False,
    )
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    renames = [
        ("model.embed_tokens.", "tok_emb."),
        ("model.layers.", "blocks."),
        ("self_attn.", "attn."),
        ("input_layernorm.", "attn_norm."),
        ("post_attention_layernorm.", "mlp_norm."),
        ("model.norm.", "norm."),
    ]
    tensors = {}
    for name, tensor in hf.state_dict().items():
        for old, new in renames:
            name = name.replace(old, new)
        tensors[name] = tensor
    cfg = GPTConfig(
        n_layers=LAYERS, n_heads=HEADS, n_kv_heads=2, d_model=WIDTH, d_ff=80, max_seq_len=SEQ,
        rope_theta=500.0,
    )  # fmt: skip
    ours = build_model(cfg, VOCAB).eval()
    _copy(ours, tensors)
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    with torch.no_grad():
        expected = hf(tokens).logits
    assert (ours(tokens) - expected).abs().max().item() <= 1e-5


def test_learned_layernorm_gelu_bias_equals_gpt2():
    transformers = _transformers()
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=SEQ,
        n_embd=WIDTH,
        n_layer=LAYERS,
        n_head=HEADS,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    # GPT-2's Conv1D stores weights as (in, out): transpose them; c_attn packs q, k, v.
    plain = {"ln_1.": "attn_norm.", "ln_2.": "mlp_norm.", "ln_f.": "norm.", "wte.": "tok_emb.",
             "wpe.": "pos_emb."}  # fmt: skip
    conv = {"attn.c_proj.": "attn.o_proj.", "mlp.c_fc.": "mlp.up_proj.",
            "mlp.c_proj.": "mlp.down_proj."}  # fmt: skip
    tensors = {}
    for name, tensor in hf.state_dict().items():
        name = name.removeprefix("transformer.").replace("h.", "blocks.", 1)
        if name == "lm_head.weight" or name.endswith(".attn.bias"):
            continue  # tied to wte / a causal-mask buffer in older versions
        if ".attn.c_attn." in name:
            prefix, kind = name.split(".attn.c_attn.")
            parts = tensor.t().chunk(3, dim=0) if kind == "weight" else tensor.chunk(3)
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), parts, strict=True):
                tensors[f"{prefix}.attn.{proj}.{kind}"] = part
            continue
        for old, new in conv.items():
            if old in name:
                name = name.replace(old, new)
                tensor = tensor.t() if name.endswith("weight") else tensor
        for old, new in plain.items():
            name = name.replace(old, new)
        tensors[name] = tensor
    cfg = GPTConfig(
        n_layers=LAYERS, n_heads=HEADS, d_model=WIDTH, max_seq_len=SEQ, pos_emb="learned",
        norm="layernorm", mlp="gelu", bias=True, tie_embeddings=True,
    )  # fmt: skip
    ours = build_model(cfg, VOCAB).eval()
    _copy(ours, tensors)
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    with torch.no_grad():
        expected = hf(tokens).logits
    assert (ours(tokens) - expected).abs().max().item() <= 1e-5
