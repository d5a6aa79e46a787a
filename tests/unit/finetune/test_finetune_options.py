"""Fine-tuning's model-level options: `dropout=P` rebuilds the model with dropout P around the same
weights, and `dtype=auto` is resolved once (as `lmforge train` resolves it) and recorded."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from lmforge.config import load_config
from lmforge.data.tokenizer import EOT, build_char
from lmforge.finetune import finetune
from lmforge.finetune.config import FinetuneConfig
from lmforge.finetune.publish import FINETUNE_CONFIG
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.models.registry import with_dropout
from lmforge.run.rundir import create_run_dir, load_run
from lmforge.train import peak
from lmforge.verb import Flags

VOCAB = 40
CONFIGS = {
    "gpt": GPTConfig(n_layers=2, n_heads=2, d_model=32, max_seq_len=16),
    "lstm": LSTMConfig(n_layers=2, d_model=32, d_hidden=32),
}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_with_dropout_keeps_every_weight_and_only_changes_training(kind):
    torch.manual_seed(0)
    model = build_model(CONFIGS[kind], VOCAB).eval()
    rebuilt, config = with_dropout(model, CONFIGS[kind], 0.5)
    assert config.dropout == 0.5 and CONFIGS[kind].dropout == 0.0
    assert not rebuilt.training  # the mode it was given
    before, after = model.state_dict(), rebuilt.state_dict()
    assert before.keys() == after.keys()
    for key, tensor in before.items():
        assert torch.equal(after[key], tensor), key
    tokens = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        assert torch.equal(rebuilt(tokens), model(tokens))  # eval: dropout is the identity
        rebuilt.train()
        assert not torch.equal(rebuilt(tokens), model(tokens))  # training: it drops


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    tokenizer = build_char(["abcdefghijklmnopqrstuvwxyz .\n"], [EOT])
    cfg = CONFIGS["gpt"].model_copy(update={"max_seq_len": 32})
    model = build_model(cfg, tokenizer.vocab_size)
    return create_run_dir(tmp_path_factory.mktemp("base") / "gpt", model, cfg, tokenizer)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("task")
    rng = random.Random(0)
    for split, n in (("train", 32), ("dev", 8), ("test", 8)):
        lines = []
        for _ in range(n):
            label = rng.random() < 0.5
            word = rng.choice(["good", "great"] if label else ["bad", "awful"])
            lines.append(f"{'pos' if label else 'neg'} the film was {word}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_dropout_and_dtype_auto_are_applied_and_recorded(base, task_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(peak, "PEAK_SIZE", 256)  # a small matmul keeps the measurement quick
    out = tmp_path / "cls"
    cfg = FinetuneConfig(
        init=str(base), out=str(out), task={"name": "classification", "dir": str(task_dir)},
        device="cpu", threads=1, dtype="auto", dropout=0.2,
        classifier={"epochs": 1, "batch_size": 8},
    )  # fmt: skip
    assert finetune(cfg, Flags()) == 0
    recorded = load_config(FinetuneConfig, out / FINETUNE_CONFIG)
    expected = str(peak.choose_dtype(torch.device("cpu"), 1)).removeprefix("torch.")
    assert recorded.dtype == expected  # the dtype used, not "auto"
    assert load_run(out).model_config.dropout == 0.2  # the fine-tuned run keeps its dropout
    assert load_run(base).model_config.dropout == 0.0  # the base run is untouched
