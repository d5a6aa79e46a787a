"""Tiny run dirs for eval tests, written through the run-dir API (no training needed)."""

from __future__ import annotations

import pytest
import torch

from lmforge.data.tokenizer import EOT, build_char
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.run.rundir import create_run_dir

TEXT = "abcdefghijklmnopqrstuvwxyz .,:!?\n0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ'-"


def make_run(path, kind: str = "gpt"):
    torch.manual_seed(0)
    tokenizer = build_char([TEXT], [EOT])
    if kind == "gpt":
        cfg = GPTConfig(n_layers=2, n_heads=2, d_model=32, max_seq_len=64)
    else:
        cfg = LSTMConfig(n_layers=2, d_model=32, d_hidden=32)
    model = build_model(cfg, tokenizer.vocab_size)
    return create_run_dir(path, model, cfg, tokenizer)


@pytest.fixture
def gpt_run(tmp_path):
    return make_run(tmp_path / "gpt")
