"""Sampling functions are pure: fixed logits in, tokens out (greedy, temperature, top-k, top-p,
repetition penalty, seeded draws)."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.infer.sampling import (
    apply_repetition_penalty,
    apply_top_k,
    apply_top_p,
    make_generator,
    sample_next,
    seen_tokens,
)

LOGITS = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.5, -1.0, 4.0, 4.5]])


def test_greedy_is_argmax_and_ignores_filters() -> None:
    assert sample_next(LOGITS, temperature=0).tolist() == [1, 3]
    assert sample_next(LOGITS, temperature=0, top_k=3, top_p=0.1).tolist() == [1, 3]


def test_top_k_keeps_the_k_largest() -> None:
    out = apply_top_k(LOGITS, 2)
    assert torch.isinf(out).tolist() == [[True, False, False, True], [True, True, False, False]]
    assert torch.equal(apply_top_k(LOGITS, 10), LOGITS)


def test_top_p_keeps_the_smallest_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    # Mass before each token: 0, .5, .8, .95 -> p=0.8 keeps the first two, p=0.81 three.
    assert torch.isfinite(apply_top_p(logits, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(apply_top_p(logits, 0.81)).tolist() == [[True, True, True, False]]
    # The likeliest token survives even a tiny p; p=1 keeps everything.
    assert torch.isfinite(apply_top_p(logits, 1e-6)).tolist() == [[True, False, False, False]]
    assert torch.equal(apply_top_p(logits, 1.0), logits)


def test_top_p_respects_vocabulary_order() -> None:
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]]))
    assert torch.isfinite(apply_top_p(logits, 0.8)).tolist() == [[False, True, False, True]]


def test_top_k_one_and_filtered_draws_stay_in_the_kept_set() -> None:
    gen = make_generator(0)
    for _ in range(20):
        assert sample_next(LOGITS, 1.0, top_k=1, generator=gen).tolist() == [1, 3]
        drawn = sample_next(LOGITS, 1.0, top_k=2, generator=gen).tolist()
        assert drawn[0] in (1, 2) and drawn[1] in (2, 3)


def test_temperature_shapes_the_distribution() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = [0.25, 0.75] at temperature 1
    gen = make_generator(123)
    n = 4000

    def frequency_of_1(temperature: float) -> float:
        rows = logits.expand(n, 2)
        return sample_next(rows, temperature, generator=gen).float().mean().item()

    assert frequency_of_1(1.0) == pytest.approx(0.75, abs=0.03)
    # T=0.5 squares the odds: 9:1 -> 0.9; a high temperature flattens towards 0.5.
    assert frequency_of_1(0.5) == pytest.approx(0.9, abs=0.03)
    assert frequency_of_1(100.0) == pytest.approx(0.5, abs=0.04)


def test_seeded_draws_repeat_and_differ_across_seeds() -> None:
    logits = torch.zeros(64, 50)
    a = sample_next(logits, 1.0, generator=make_generator(7))
    b = sample_next(logits, 1.0, generator=make_generator(7))
    c = sample_next(logits, 1.0, generator=make_generator(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_repetition_penalty_hand_values() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert torch.equal(apply_repetition_penalty(logits, seen, 1.0), logits)
    # Penalised greedy choice moves away from a seen token.
    logits = torch.tensor([[2.0, 1.5]])
    assert sample_next(apply_repetition_penalty(logits, torch.tensor([[True, False]]), 2.0), 0) == 1


def test_seen_tokens_ignores_pads() -> None:
    ids = torch.tensor([[1, 2, 2], [0, 3, 3]])
    pad = torch.tensor([[False, False, False], [True, False, False]])
    seen = seen_tokens(ids, 5, pad)
    assert seen.tolist() == [[False, True, True, False, False], [False, False, False, True, False]]


def test_sampling_functions_do_not_modify_their_input() -> None:
    logits = LOGITS.clone()
    apply_top_k(logits, 1)
    apply_top_p(logits, 0.5)
    apply_repetition_penalty(logits, torch.ones_like(logits, dtype=torch.bool), 3.0)
    sample_next(logits, 0.7, top_k=2, top_p=0.9, generator=make_generator(0))
    assert torch.equal(logits, LOGITS)
