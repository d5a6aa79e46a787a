"""Builders shared by the interop tests: tiny lmforge runs and tiny random HF model dirs."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from lmforge_testing import require

from lmforge.data.tokenizer import EOT, Tokenizer, build_char
from lmforge.interop.hf_tokenizer import write_hf_tokenizer
from lmforge.models import GPTConfig, build_model
from lmforge.run.rundir import create_run_dir

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n"
)
PROMPT = "First Citizen:\nBe"
SHAPE = {"n_layers": 2, "n_heads": 4, "d_model": 32, "max_seq_len": 32}
LLAMA = {"pos_emb": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_kv_heads": 2, "d_ff": 48}
GPT2 = {"pos_emb": "learned", "norm": "layernorm", "mlp": "gelu", "bias": True}


def transformers_module() -> Any:
    """`transformers`, offline; skipped locally (failed under CI) when it is not installed."""
    require(importlib.util.find_spec("transformers") is not None, "transformers not installed")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


@functools.lru_cache(maxsize=1)
def char_tokenizer() -> Tokenizer:
    return build_char([TEXT], [EOT])


def gpt_config(family: dict[str, Any], **overrides: Any) -> GPTConfig:
    # A large init std makes logits far from uniform, so greedy decoding has no near-ties.
    return GPTConfig(**{**SHAPE, **family, "init_std": 0.2, **overrides})


def make_run(path: Path, cfg: GPTConfig, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """A run dir holding a random lmforge model with the char tokenizer."""
    torch.manual_seed(seed)
    tokenizer = char_tokenizer()
    model = build_model(cfg, tokenizer.vocab_size).eval()
    with torch.no_grad():  # non-trivial norms and biases, so every mapped tensor matters
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    create_run_dir(path, model, cfg, tokenizer)
    return path, model


def make_hf_dir(path: Path, family: str, seed: int = 0, **overrides: Any) -> Any:
    """A tiny random HF Llama or GPT-2 saved with its tokenizer into `path`; returns the model."""
    transformers = transformers_module()
    tokenizer = char_tokenizer()
    vocab = tokenizer.vocab_size
    ids = {"bos_token_id": tokenizer.eot_id, "eos_token_id": tokenizer.eot_id}
    if family == "llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32,
            rope_theta=500.0,
            **{**ids, **overrides},
        )
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.GPT2Config(
            vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=32, **ids, **overrides
        )
        model = transformers.GPT2LMHeadModel(config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    model.eval()
    model.save_pretrained(path)
    write_hf_tokenizer(tokenizer, path, model_max_length=32)
    return model
