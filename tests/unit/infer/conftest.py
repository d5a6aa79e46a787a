"""Fixtures for inference tests: tiny random-init run dirs (a char tokenizer and a GPT or LSTM)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge.data.tokenizer import build_char
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.run.rundir import create_run_dir

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?\n'ÄéÜß"


def make_run(path: Path, kind: str = "gpt", max_seq_len: int = 64, seed: int = 0) -> Path:
    """A run dir with a random-init tiny model over a char vocabulary (incl. non-ASCII chars)."""
    torch.manual_seed(seed)
    tokenizer = build_char([ALPHABET], ["<|endoftext|>"])
    if kind == "gpt":
        cfg = GPTConfig(n_layers=2, n_heads=4, d_model=32, max_seq_len=max_seq_len)
    else:
        cfg = LSTMConfig(n_layers=2, d_model=32, d_hidden=32)
    model = build_model(cfg, tokenizer.vocab_size)
    return create_run_dir(path, model, cfg, tokenizer)


@pytest.fixture
def run_factory():  # noqa: ANN201
    """`make_run` for tests that need a run dir of their own shape."""
    return make_run


@pytest.fixture
def gpt_run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "gpt", "gpt")
