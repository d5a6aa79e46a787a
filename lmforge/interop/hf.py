"""Hugging Face <-> lmforge: config translation and state-dict key maps, both directions.

A lmforge GPT with RoPE + RMSNorm + SwiGLU is exactly a `LlamaForCausalLM`; with learned positions +
LayerNorm + GELU(tanh) it is exactly a `GPT2LMHeadModel`. Everything here works on plain dicts and
tensors, so export and import need no `transformers` (tests use it to check parity). References:
transformers' `modeling_llama.py` and `modeling_gpt2.py` (GPT-2's Conv1D stores weights transposed).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import ValidationError

from lmforge.config import describe_validation_error
from lmforge.errors import CheckpointError, ConfigError
from lmforge.models import GPTConfig

Family = Literal["llama", "gpt2"]

# What each family fixes; a lmforge option outside it cannot be expressed by that family.
_FAMILY_SHAPE: dict[Family, dict[str, str]] = {
    "llama": {"pos_emb": "rope", "norm": "rmsnorm", "mlp": "swiglu"},
    "gpt2": {"pos_emb": "learned", "norm": "layernorm", "mlp": "gelu"},
}
_GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both are GELU with the tanh approximation


# ---------------------------------------------------------------------------------------------
# lmforge -> Hugging Face


def hf_family(cfg: Any) -> Family:
    """The HF family that expresses this model, or a ConfigError naming what does not fit."""
    kind = getattr(cfg, "kind", "gpt")
    if kind != "gpt" or not isinstance(cfg, GPTConfig):
        raise ConfigError(
            f"cannot export model.kind={kind!r} to Hugging Face: it has no HF family; "
            "only GPT models (Llama or GPT-2 layout) export"
        )
    for family, shape in _FAMILY_SHAPE.items():
        if all(getattr(cfg, key) == value for key, value in shape.items()):
            if family == "gpt2" and cfg.kv_heads != cfg.n_heads:
                raise ConfigError(
                    f"cannot export to GPT-2: model.n_kv_heads={cfg.n_kv_heads} (grouped-query "
                    f"attention) but GPT-2 needs n_kv_heads == n_heads ({cfg.n_heads})"
                )
            return family
    # Name the options that stop it from matching the family its pos_emb suggests.
    family = "llama" if cfg.pos_emb == "rope" else "gpt2"
    bad = ", ".join(
        f"model.{key}={getattr(cfg, key)!r}"
        for key, value in _FAMILY_SHAPE[family].items()
        if getattr(cfg, key) != value
    )
    raise ConfigError(
        f"cannot export to Hugging Face: {bad} has no HF equivalent with model.pos_emb="
        f"{cfg.pos_emb!r}; Llama needs rope+rmsnorm+swiglu, GPT-2 needs learned+layernorm+gelu"
    )


def to_hf_config(
    cfg: GPTConfig, vocab_size: int, *, bos_id: int | None, eos_id: int | None, pad_id: int | None
) -> dict[str, Any]:
    """The `config.json` of the HF model equivalent to `cfg` (Llama or GPT-2)."""
    family = hf_family(cfg)
    common = {
        "vocab_size": vocab_size,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
        "use_cache": True,
    }
    if family == "llama":
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": cfg.d_model,
            "intermediate_size": cfg.ff_dim,
            "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.kv_heads,
            "head_dim": cfg.head_dim,
            "max_position_embeddings": cfg.max_seq_len,
            "hidden_act": "silu",
            "rms_norm_eps": cfg.norm_eps,
            # transformers 4.x reads rope_theta/rope_scaling, 5.x reads rope_parameters; both
            # are written so either loads the same rotation.
            "rope_theta": cfg.rope_theta,
            "rope_scaling": None,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "attention_bias": cfg.bias,
            "mlp_bias": cfg.bias,
            "attention_dropout": cfg.dropout,
            "initializer_range": cfg.init_std,
            "pretraining_tp": 1,
            **common,
        }
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": cfg.d_model,
        "n_inner": cfg.ff_dim,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_positions": cfg.max_seq_len,
        "n_ctx": cfg.max_seq_len,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": cfg.norm_eps,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "initializer_range": cfg.init_std,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        **common,
    }


def to_hf_state_dict(state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """lmforge GPT weights -> HF weights (contiguous, unshared: ready for safetensors).

    Biases the lmforge model lacks (`bias=false`) are written as zeros where the HF family always
    has them (GPT-2), which computes the same function. A lmforge weight with no HF place raises.
    """
    family = hf_family(cfg)
    state = dict(state)
    out: dict[str, torch.Tensor] = {}
    if family == "llama":
        for src, dst in llama_key_map(cfg.n_layers).items():
            if src in state:
                out[dst] = state.pop(src)
    else:
        out.update(_gpt2_from_lmforge(state, cfg))
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)  # HF re-ties it from the input embedding on load
        out.pop("lm_head.weight", None)
    elif "lm_head.weight" in state:
        out["lm_head.weight"] = state.pop("lm_head.weight")
    _refuse_leftovers(state, f"the {family} layout")
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def _refuse_leftovers(state: dict[str, torch.Tensor], where: str) -> None:
    # A non-zero weight with no destination would silently change the function: refuse it.
    leftovers = [k for k, v in state.items() if not k.endswith("bias") or bool(v.abs().max() > 0)]
    if leftovers:
        shown = ", ".join(sorted(leftovers)[:4])
        raise CheckpointError(f"weights {shown} have no place in {where}; cannot convert them")


def llama_key_map(n_layers: int) -> dict[str, str]:
    """lmforge key -> HF Llama key, for weights and (when present) biases."""
    keys = {"tok_emb.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    for i in range(n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            for p in ("weight", "bias"):
                keys[f"{ours}attn.{proj}.{p}"] = f"{theirs}self_attn.{proj}.{p}"
        for proj in ("gate_proj", "up_proj", "down_proj"):
            for p in ("weight", "bias"):
                keys[f"{ours}mlp.{proj}.{p}"] = f"{theirs}mlp.{proj}.{p}"
        keys[f"{ours}attn_norm.weight"] = f"{theirs}input_layernorm.weight"
        keys[f"{ours}mlp_norm.weight"] = f"{theirs}post_attention_layernorm.weight"
    return keys


def _gpt2_from_lmforge(state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Pops the lmforge GPT-2-layout weights from `state` and returns them under GPT-2 names."""
    d = cfg.d_model
    zeros = torch.zeros  # GPT-2 always has biases; zeros reproduce a bias-free lmforge layer

    def pop(key: str, size: int) -> torch.Tensor:
        return state.pop(key) if key in state else zeros(size)

    out = {
        "transformer.wte.weight": state.pop("tok_emb.weight"),
        "transformer.wpe.weight": state.pop("pos_emb.weight"),
        "transformer.ln_f.weight": state.pop("norm.weight"),
        "transformer.ln_f.bias": pop("norm.bias", d),
    }
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for norm, ln in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            out[f"{theirs}{ln}.weight"] = state.pop(f"{ours}{norm}.weight")
            out[f"{theirs}{ln}.bias"] = pop(f"{ours}{norm}.bias", d)
        qkv = [state.pop(f"{ours}attn.{p}.weight") for p in ("q_proj", "k_proj", "v_proj")]
        # Conv1D computes x @ W with W (in, out): the transpose of nn.Linear's (out, in).
        out[f"{theirs}attn.c_attn.weight"] = torch.cat(qkv, dim=0).t()
        out[f"{theirs}attn.c_attn.bias"] = torch.cat(
            [pop(f"{ours}attn.{p}.bias", d) for p in ("q_proj", "k_proj", "v_proj")]
        )
        linears = (("attn.o_proj", "attn.c_proj", d), ("mlp.up_proj", "mlp.c_fc", cfg.ff_dim))
        linears += (("mlp.down_proj", "mlp.c_proj", d),)
        for src, dst, n_out in linears:
            out[f"{theirs}{dst}.weight"] = state.pop(f"{ours}{src}.weight").t()
            out[f"{theirs}{dst}.bias"] = pop(f"{ours}{src}.bias", n_out)
    return out


# ---------------------------------------------------------------------------------------------
# Hugging Face -> lmforge


def family_of_hf_config(hf: dict[str, Any]) -> Family:
    """`llama` or `gpt2` from a config.json, or a CheckpointError naming the architecture."""
    model_type = hf.get("model_type")
    archs = hf.get("architectures") or []
    if model_type in ("llama", "gpt2"):
        return model_type
    named = model_type or (archs[0] if archs else "unknown")
    raise CheckpointError(
        f"cannot import Hugging Face model_type={named!r}: only GPT-2 ('gpt2') and Llama "
        "('llama') family checkpoints are supported"
    )


def from_hf_config(hf: dict[str, Any]) -> GPTConfig:
    """The lmforge GPTConfig equivalent to a HF `config.json`; unsupported options raise."""
    family = family_of_hf_config(hf)
    try:
        fields = _llama_fields(hf) if family == "llama" else _gpt2_fields(hf)
    except KeyError as exc:
        raise CheckpointError(
            f"config.json of this {family} model lacks the key {exc.args[0]!r}; is it complete?"
        ) from None
    try:
        return GPTConfig(**fields)
    except ValidationError as exc:
        problem = describe_validation_error(exc)
        raise CheckpointError(
            f"config.json describes a model lmforge cannot build: {problem}"
        ) from None


def _unsupported(option: str, value: Any, family: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"cannot import this {family} checkpoint: config.json {option}={value!r} is not "
        f"supported ({why})"
    )


def _llama_fields(hf: dict[str, Any]) -> dict[str, Any]:
    d_model, n_heads = hf["hidden_size"], hf["num_attention_heads"]
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise _unsupported("hidden_act", act, "llama", "lmforge's SwiGLU uses silu")
    head_dim = hf.get("head_dim") or d_model // n_heads
    if head_dim * n_heads != d_model:
        raise _unsupported("head_dim", head_dim, "llama", "lmforge needs head_dim*heads == hidden")
    rope_theta = _llama_rope_theta(hf)
    if hf.get("pretraining_tp", 1) not in (1, None):
        raise _unsupported("pretraining_tp", hf["pretraining_tp"], "llama", "only 1 is exact")
    bias = bool(hf.get("attention_bias", False) or hf.get("mlp_bias", False))
    return {
        "n_layers": hf["num_hidden_layers"],
        "n_heads": n_heads,
        "n_kv_heads": _kv_heads(hf.get("num_key_value_heads"), n_heads),
        "d_model": d_model,
        "d_ff": hf["intermediate_size"],
        "max_seq_len": hf.get("max_position_embeddings", 2048),
        "pos_emb": "rope",
        "norm": "rmsnorm",
        "mlp": "swiglu",
        "bias": bias,
        "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "dropout": float(hf.get("attention_dropout", 0.0) or 0.0),
        "rope_theta": rope_theta,
        "norm_eps": hf.get("rms_norm_eps", 1e-6),
        "init_std": hf.get("initializer_range", 0.02),
    }


def _kv_heads(n_kv_heads: int | None, n_heads: int) -> int | None:
    # Unset is lmforge's spelling of "one key/value head per query head".
    return None if n_kv_heads in (None, n_heads) else n_kv_heads


def _llama_rope_theta(hf: dict[str, Any]) -> float:
    """rope_theta from a 4.x (`rope_theta` + `rope_scaling`) or 5.x (`rope_parameters`) config."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    for option, table in (("rope_parameters", params), ("rope_scaling", scaling)):
        rope_type = table.get("rope_type", table.get("type", "default"))
        if rope_type != "default":
            raise _unsupported(
                f"{option}.rope_type", rope_type, "llama", "only plain RoPE is implemented"
            )
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _gpt2_fields(hf: dict[str, Any]) -> dict[str, Any]:
    act = hf.get("activation_function", "gelu_new")
    if act not in _GPT2_ACTIVATIONS:
        raise _unsupported("activation_function", act, "gpt2", "lmforge's GELU is tanh-approx")
    for option, exact in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if hf.get(option, exact) != exact:
            raise _unsupported(option, hf[option], "gpt2", f"only {exact} is implemented")
    d_model, n_heads = hf["n_embd"], hf["n_head"]
    return {
        "n_layers": hf["n_layer"],
        "n_heads": n_heads,
        "n_kv_heads": None,
        "d_model": d_model,
        "d_ff": hf.get("n_inner") or 4 * d_model,
        "max_seq_len": hf["n_positions"],
        "pos_emb": "learned",
        "norm": "layernorm",
        "mlp": "gelu",
        "bias": True,
        "tie_embeddings": bool(hf.get("tie_word_embeddings", True)),
        "dropout": float(hf.get("resid_pdrop", 0.0) or 0.0),
        "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
        "init_std": hf.get("initializer_range", 0.02),
    }


def from_hf_state_dict(
    hf_state: dict[str, torch.Tensor], cfg: GPTConfig, expected: dict[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """HF weights -> a complete lmforge state dict shaped like `expected` (fp32).

    `expected` is the lmforge model's own {key: shape}; a bias the model has but the checkpoint
    lacks (Llama with attention_bias only) is zero, which is what the HF model computes.
    """
    family = hf_family(cfg)
    if family == "llama":
        inverse = {hf_key: ours for ours, hf_key in llama_key_map(cfg.n_layers).items()}
        ours = {inverse[k]: v for k, v in hf_state.items() if k in inverse}
    else:
        try:
            ours = _gpt2_to_lmforge(hf_state, cfg)
        except KeyError as exc:
            raise CheckpointError(
                f"the gpt2 checkpoint has no weight {exc.args[0]}; is model.safetensors complete?"
            ) from None
    if "lm_head.weight" in hf_state and not cfg.tie_embeddings:
        ours["lm_head.weight"] = hf_state["lm_head.weight"]
    if "lm_head.weight" in expected and cfg.tie_embeddings:
        ours["lm_head.weight"] = ours["tok_emb.weight"]
    result: dict[str, torch.Tensor] = {}
    for key, shape in expected.items():
        tensor = ours.get(key)
        if tensor is None and key.endswith("bias"):
            tensor = torch.zeros(shape)
        if tensor is None:
            raise CheckpointError(
                f"the {family} checkpoint has no weight for {key}; is it complete?"
            )
        if tensor.shape != shape:
            raise CheckpointError(
                f"{family} weight for {key} has shape {tuple(tensor.shape)}, expected "
                f"{tuple(shape)}; config.json does not match model.safetensors"
            )
        result[key] = tensor.to(torch.float32)
    return result


def _gpt2_to_lmforge(hf: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
    d = cfg.d_model
    out = {
        "tok_emb.weight": hf["wte.weight"],
        "pos_emb.weight": hf["wpe.weight"],
        "norm.weight": hf["ln_f.weight"],
        "norm.bias": hf["ln_f.bias"],
    }
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"h.{i}."
        for norm, ln in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            out[f"{ours}{norm}.weight"] = hf[f"{theirs}{ln}.weight"]
            out[f"{ours}{norm}.bias"] = hf[f"{theirs}{ln}.bias"]
        # c_attn is (d, 3d) in Conv1D layout: transpose to (3d, d), then split q | k | v rows.
        qkv_w = hf[f"{theirs}attn.c_attn.weight"].t().split(d, dim=0)
        qkv_b = hf[f"{theirs}attn.c_attn.bias"].split(d, dim=0)
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{ours}attn.{proj}.weight"] = qkv_w[j]
            out[f"{ours}attn.{proj}.bias"] = qkv_b[j]
        for ours_name, theirs_name in (
            ("attn.o_proj", "attn.c_proj"),
            ("mlp.up_proj", "mlp.c_fc"),
            ("mlp.down_proj", "mlp.c_proj"),
        ):
            out[f"{ours}{ours_name}.weight"] = hf[f"{theirs}{theirs_name}.weight"].t()
            out[f"{ours}{ours_name}.bias"] = hf[f"{theirs}{theirs_name}.bias"]
    return out
