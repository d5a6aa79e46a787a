"""build_model registry, ModelConfig discrimination, and save_model -> load_model round trips."""

from __future__ import annotations

import pytest
import torch
from pydantic import Field
from safetensors.torch import load_file

from lmforge.config import Section, build_config
from lmforge.errors import CheckpointError, ConfigError
from lmforge.models import (
    GPT,
    GPTConfig,
    LSTMConfig,
    LSTMLanguageModel,
    ModelConfig,
    build_model,
    load_model,
    model_state_dict_for_save,
    save_model,
)

VOCAB = 50

CONFIGS = [
    GPTConfig(n_layers=2, n_heads=4, d_model=32, max_seq_len=16),
    GPTConfig(
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
    LSTMConfig(n_layers=2, d_model=32, d_hidden=40, tie_embeddings=True),
    LSTMConfig(n_layers=1, d_model=32, d_hidden=32),
]


class Holder(Section):
    """Stands in for the trainer's config: a `model` key of either kind."""

    model: ModelConfig = Field(default_factory=GPTConfig, description="the architecture")


def test_model_config_is_discriminated_by_kind():
    assert isinstance(Holder().model, GPTConfig)
    lstm = build_config(Holder, overrides=["model.kind=lstm", "model.d_hidden=64"]).model
    assert isinstance(lstm, LSTMConfig) and lstm.d_hidden == 64
    with pytest.raises(ConfigError, match="d_hidden"):
        build_config(Holder, overrides=["model.kind=gpt", "model.d_hidden=64"])
    assert build_config(Holder, overrides=["model.n_layers=3"]).model.n_layers == 3  # kind=gpt
    with pytest.raises(ConfigError, match="'rnn'"):
        build_config(Holder, overrides=["model.kind=rnn"])
    with pytest.raises(ConfigError, match="n_kv_heads"):
        build_config(Holder, overrides=["model.n_heads=4", "model.n_kv_heads=3"])


def test_build_model_picks_the_kind():
    assert isinstance(build_model(CONFIGS[0], VOCAB), GPT)
    assert isinstance(build_model(CONFIGS[2], VOCAB), LSTMLanguageModel)
    assert build_model(CONFIGS[0], VOCAB).vocab_size == VOCAB
    with pytest.raises(ValueError, match="vocab_size"):
        build_model(CONFIGS[0], 0)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.kind}-tied{c.tie_embeddings}")
def test_save_load_gives_identical_logits(tmp_path, cfg):
    torch.manual_seed(0)
    model = build_model(cfg, VOCAB).eval()
    save_model(model, cfg, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "model_config.toml"]
    loaded, loaded_cfg = load_model(tmp_path)
    assert loaded_cfg == cfg and loaded.vocab_size == VOCAB and not loaded.training
    tokens = torch.randint(0, VOCAB, (2, 12))
    assert torch.equal(loaded(tokens), model(tokens))
    if cfg.tie_embeddings:
        assert loaded.lm_head.weight is loaded.tok_emb.weight


def test_saved_file_has_no_aliases_and_no_rope_buffers(tmp_path):
    model = build_model(CONFIGS[1], VOCAB)
    assert "lm_head.weight" not in model_state_dict_for_save(model)
    save_model(build_model(CONFIGS[0], VOCAB), CONFIGS[0], tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert "lm_head.weight" in keys and not any("rope" in k for k in keys)
    assert "blocks.1.attn.q_proj.weight" in keys and "blocks.0.mlp.gate_proj.weight" in keys


def test_load_errors_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="model_config.toml not found"):
        load_model(tmp_path)
    save_model(build_model(CONFIGS[0], VOCAB), CONFIGS[0], tmp_path)
    config = tmp_path / "model_config.toml"
    config.write_text(config.read_text().replace("d_model = 32", "d_model = 64"))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(tmp_path)
    config.write_text("vocab_size = 50\n[model]\nkind = 'rnn'\n")
    with pytest.raises(CheckpointError, match="model"):
        load_model(tmp_path)
