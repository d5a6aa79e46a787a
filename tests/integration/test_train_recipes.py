"""Every recipe in configs/ validates; the char recipes run on any char data dir; the demo
pipeline runs end to end with a tiny step count; `lmforge train --help` documents the keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from _train_support import make_data_dir, train_losses

from lmforge.cli import main
from lmforge.config import build_config
from lmforge.run.config import TrainConfig
from lmforge.train.trainer import run
from lmforge.verb import Flags

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted(p for p in CONFIGS.glob("*.toml"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("recipes"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_validates(recipe):
    cfg = build_config(TrainConfig, recipe, ["data=d", "out=o"])
    assert cfg.max_steps or cfg.train.max_time
    assert cfg.train.threads is None  # recipes never pin threads


@pytest.mark.parametrize("name", ["shakespeare_char", "shakespeare_char_lstm"])
def test_char_recipes_run_on_any_char_data_dir(data, tmp_path, name):
    overrides = [
        f"data={data}",
        f"out={tmp_path / name}",
        "train.max_steps=2",
        "train.batch_size=2",
        "train.log_every=1",
        "eval.batches=1",
        "sample.max_new_tokens=4",
        "train.peak_tflops=1",
        "dtype=float32",
        "compile=false",  # two steps: compiling (the recipe's choice for its 92 s) would dominate
    ]
    cfg = build_config(TrainConfig, CONFIGS / f"{name}.toml", overrides)
    assert run(cfg, Flags()) == 0
    assert sorted(train_losses(tmp_path / name)) == [1, 2]


def test_train_help_lists_keys(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for key in ("train.max_steps", "optim.name", "init.from", "checkpoint.keep_last", "--resume"):
        assert key in text


def test_demo_pipeline_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    args = [
        "demo",
        f"data={tmp_path / 'data'}",
        f"out={tmp_path / 'run'}",
        "max_steps=3",
        "pydocs_modules=3",
        "max_new_tokens=5",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[1/3] prepare" in out and "[2/3] train" in out and "bits per byte" in out
    assert sorted(train_losses(tmp_path / "run"))[-1] == 3
    assert main(args) == 0  # a second run reuses the data dir and the finished run
    assert "already finished" in capsys.readouterr().out
