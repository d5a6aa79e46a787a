"""Sliding-window loss, perplexity and bits-per-byte agree with a direct computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.eval.perplexity import plan_windows, score_stream
from lmforge.models import GPTConfig, LSTMConfig, build_model

VOCAB = 40


def _gpt(max_seq_len: int = 16):
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=2, n_heads=2, d_model=32, max_seq_len=max_seq_len)
    return build_model(cfg, VOCAB).eval()


@torch.no_grad()
def _target_nll(model, context: torch.Tensor, target: int) -> float:
    logits = model(context[None])[0, -1]
    return float(F.cross_entropy(logits[None], torch.tensor([target])))


def test_every_target_scored_once():
    for n, window, stride in [(10, 4, 2), (17, 5, 5), (3, 8, 4), (30, 7, 3)]:
        seen = []
        for start, end, first in plan_windows(n, window, stride):
            assert end - start <= window and first > start
            seen.extend(range(first, end + 1))
        assert seen == list(range(1, n)), (n, window, stride)


@pytest.mark.parametrize("window,stride", [(16, 16), (6, 6), (6, 2), (5, 3)])
def test_matches_per_target_computation(window, stride):
    model = _gpt()
    torch.manual_seed(1)
    tokens = torch.randint(0, VOCAB, (23,))
    byte_lengths = torch.randint(0, 4, (VOCAB,))
    got = score_stream(model, tokens, byte_lengths, window=window, stride=stride, batch_size=3)
    # Direct: target j is scored in the first window start k*stride with j <= k*stride + window.
    nats = 0.0
    for j in range(1, tokens.numel()):
        k = max(0, math.ceil((j - window) / stride))
        nats += _target_nll(model, tokens[k * stride : j], int(tokens[j]))
    assert got.tokens == tokens.numel() - 1
    assert got.bytes == int(byte_lengths[tokens[1:]].sum())
    assert got.nats == pytest.approx(nats, rel=1e-5)
    assert got.loss == pytest.approx(nats / got.tokens, rel=1e-5)
    assert got.perplexity == pytest.approx(math.exp(nats / got.tokens), rel=1e-5)
    assert got.bits_per_byte == pytest.approx(nats / (math.log(2) * got.bytes), rel=1e-5)


@torch.no_grad()
def test_one_window_equals_plain_cross_entropy_for_the_lstm():
    torch.manual_seed(0)
    model = build_model(LSTMConfig(n_layers=2, d_model=32, d_hidden=32), VOCAB).eval()
    tokens = torch.randint(0, VOCAB, (12,))
    got = score_stream(model, tokens, [1] * VOCAB, window=64)
    direct = F.cross_entropy(model(tokens[None, :-1])[0], tokens[1:], reduction="sum")
    assert got.nats == pytest.approx(float(direct), rel=1e-5)
    assert got.bits_per_byte == pytest.approx(float(direct) / (math.log(2) * 11), rel=1e-5)
