"""TrainConfig: `init.from` alias round-trips, derived values, explicit keys for --resume."""

from __future__ import annotations

import pytest

from lmforge.config import build_config, load_config, save_config
from lmforge.errors import ConfigError
from lmforge.run.config import TrainConfig
from lmforge.train.session import explicit_values


def test_init_from_alias_round_trips_through_toml(tmp_path):
    cfg = build_config(TrainConfig, None, ["init.from=runs/base", "out=runs/x", "data=d"])
    assert cfg.init.from_ == "runs/base"
    save_config(cfg, tmp_path / "config.toml")
    assert 'from = "runs/base"' in (tmp_path / "config.toml").read_text()
    assert load_config(TrainConfig, tmp_path / "config.toml") == cfg


def test_derived_values():
    gpt = build_config(TrainConfig, None, ["model.max_seq_len=64"])
    assert gpt.seq_len == 64 and not gpt.sequential and gpt.max_steps == 1000
    lstm = build_config(TrainConfig, None, ["model.kind=lstm", "train.max_time=60"])
    assert lstm.seq_len == 128 and lstm.sequential and lstm.max_steps is None
    assert gpt.checkpoint_every == gpt.eval.every == gpt.sample_every


def test_bad_keys_name_themselves():
    with pytest.raises(ConfigError, match="train.max_stepz"):
        build_config(TrainConfig, None, ["train.max_stepz=3"])
    with pytest.raises(ConfigError, match="optim.name"):
        build_config(TrainConfig, None, ["optim.name=adam"])


def test_explicit_values_are_only_what_was_set():
    cfg = build_config(TrainConfig, None, ["train.max_steps=50", "model.dropout=0.1", "out=o"])
    assert explicit_values(cfg) == {
        "train": {"max_steps": 50},
        "model": {"dropout": 0.1, "kind": "gpt"},
        "out": "o",
    }
