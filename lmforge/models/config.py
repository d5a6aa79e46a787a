"""The model configs (`[model]` in a recipe): GPTConfig, LSTMConfig and the `ModelConfig` union.

Schema only, with no torch import, so reading a recipe or `lmforge train --help` stays fast; the
modules that build the networks are `gpt.py` and `lstm.py`. `model.kind` picks the family; a
`[model]` table without `kind` means `gpt`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from lmforge.config import Section


class GPTConfig(Section):
    """A decoder-only Transformer. Defaults: a small Llama (RoPE, RMSNorm, SwiGLU, untied)."""

    kind: Literal["gpt"] = Field("gpt", description="model family: gpt (Transformer) or lstm")
    n_layers: int = Field(4, ge=1, description="number of Transformer blocks")
    n_heads: int = Field(4, ge=1, description="attention (query) heads per block")
    n_kv_heads: int | None = Field(
        None, ge=1, description="key/value heads for grouped-query attention (unset = n_heads)"
    )
    d_model: int = Field(256, ge=1, description="width of the residual stream / embeddings")
    d_ff: int | None = Field(
        None,
        ge=1,
        description="MLP hidden width (unset = 4*d_model for gelu, 8/3*d_model rounded up to a "
        "multiple of 64 for swiglu)",
    )
    max_seq_len: int = Field(256, ge=1, description="longest context (positions) the model sees")
    pos_emb: Literal["rope", "learned"] = Field(
        "rope", description="positions: rope (rotary, Llama) or learned (absolute, GPT-2)"
    )
    norm: Literal["rmsnorm", "layernorm"] = Field(
        "rmsnorm", description="normalisation: rmsnorm (Llama) or layernorm (GPT-2)"
    )
    mlp: Literal["swiglu", "gelu", "none"] = Field(
        "swiglu",
        description="MLP: swiglu (Llama), gelu (GPT-2, tanh approximation) or none "
        "(attention-only blocks, for interpretability)",
    )
    bias: bool = Field(False, description="biases in linear layers and LayerNorm (GPT-2: true)")
    tie_embeddings: bool = Field(
        False, description="share the token embedding with the output head (GPT-2: true)"
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on embeddings, attention and residuals"
    )
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base frequency (Llama 3: 500000)")
    norm_eps: float = Field(1e-5, gt=0, description="epsilon inside RMSNorm/LayerNorm")
    init_std: float = Field(0.02, gt=0, description="std of the normal init of weights")
    zero_init_output: bool = Field(
        False, description="start o_proj/down_proj at zero, so each block starts as identity"
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> GPTConfig:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "choose d_model as a multiple of n_heads"
            )
        if self.n_heads % self.kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}; "
                "choose n_kv_heads among the divisors of n_heads"
            )
        if self.pos_emb == "rope" and self.head_dim % 2:
            raise ValueError(
                f"pos_emb='rope' needs an even head_dim, got d_model/n_heads={self.head_dim}; "
                "change d_model or n_heads"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """`n_kv_heads` resolved (unset means one key/value head per query head)."""
        return self.n_kv_heads or self.n_heads

    @property
    def ff_dim(self) -> int:
        """`d_ff` resolved. SwiGLU has three matrices, so 2/3 of 4*d_model keeps the MLP's
        parameter count of a GELU MLP (Llama); rounding up to 64 keeps matmuls aligned (Llama
        rounds to 256, too coarse for small models)."""
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp == "gelu":
            return 4 * self.d_model
        return 64 * math.ceil(int(8 * self.d_model / 3) / 64)


class LSTMConfig(Section):
    """A multi-layer LSTM language model."""

    kind: Literal["lstm"] = Field("lstm", description="model family: gpt (Transformer) or lstm")
    n_layers: int = Field(2, ge=1, description="stacked LSTM layers")
    d_model: int = Field(256, ge=1, description="token embedding size (LSTM input)")
    d_hidden: int = Field(512, ge=1, description="LSTM hidden/cell state size")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on embeddings, between layers and before the head"
    )
    tie_embeddings: bool = Field(
        False,
        description="share the token embedding with the head (adds a d_hidden->d_model "
        "projection when they differ)",
    )
    init_range: float = Field(
        0.1, gt=0, description="embedding/head weights start uniform in [-init_range, init_range]"
    )
    forget_bias: float = Field(1.0, description="initial forget-gate bias (1: remember by default)")


def _model_kind(value: Any) -> str | None:
    # Like Field(discriminator="kind"), except that a [model] table without `kind` means gpt,
    # the default, instead of an error.
    if isinstance(value, dict):
        return value.get("kind", "gpt")
    return getattr(value, "kind", None)


ModelConfig = Annotated[
    Annotated[GPTConfig, Tag("gpt")] | Annotated[LSTMConfig, Tag("lstm")],
    Discriminator(_model_kind),
]
