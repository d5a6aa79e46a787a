"""Real tiny models: cached decoding equals uncached decoding token for token under greedy (GPT KV
cache and LSTM state), a left-padded batch equals its rows run alone, and beam search with one beam
is greedy decoding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.infer.beam import beam_search
from lmforge.infer.generator import GenerationParams, Generator
from lmforge.models import GPTConfig, LSTMConfig, build_model

PROMPTS = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5, 8, 9, 7, 9], [2]]
VOCAB = 40


def _model(kind: str, max_seq_len: int = 64) -> torch.nn.Module:
    torch.manual_seed(1)
    if kind == "gpt":
        cfg = GPTConfig(n_layers=2, n_heads=4, d_model=32, max_seq_len=max_seq_len)
    elif kind == "gpt2-style":
        cfg = GPTConfig(
            n_layers=2,
            n_heads=2,
            d_model=32,
            max_seq_len=max_seq_len,
            pos_emb="learned",
            norm="layernorm",
            mlp="gelu",
            bias=True,
        )
    else:
        cfg = LSTMConfig(n_layers=2, d_model=32, d_hidden=48)
    return build_model(cfg, VOCAB).eval()


def _greedy(model, prompts, use_cache: bool, n: int = 24) -> list[list[int]]:  # noqa: ANN001
    params = GenerationParams(max_new_tokens=n, temperature=0, use_cache=use_cache)
    return [c.token_ids for c in Generator(model).generate(prompts, params)]


@pytest.mark.parametrize("kind", ["gpt", "gpt2-style", "lstm"])
def test_cached_equals_uncached_in_a_left_padded_batch(kind: str) -> None:
    model = _model(kind)
    cached = _greedy(model, PROMPTS, use_cache=True)
    assert cached == _greedy(model, PROMPTS, use_cache=False)
    assert cached == [_greedy(model, [p], use_cache=True)[0] for p in PROMPTS]
    assert len({tuple(c) for c in cached}) > 1  # the rows really differ


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_beam_one_is_greedy(kind: str) -> None:
    model = _model(kind)
    beams = beam_search(model, PROMPTS, beam_size=1, max_new_tokens=24)
    assert [b.token_ids for b in beams] == _greedy(model, PROMPTS, use_cache=True)
    # With a stop id, greedy and beam-1 both end where greedy first emits it.
    greedy_rows = _greedy(model, PROMPTS, use_cache=True)
    stop = greedy_rows[0][5]
    params = GenerationParams(max_new_tokens=24, temperature=0, stop_ids=(stop,))
    stopped = [c.token_ids for c in Generator(model).generate(PROMPTS, params)]
    beams = beam_search(model, PROMPTS, 1, 24, stop_ids=[stop])
    assert [b.token_ids for b in beams] == stopped
    assert beams[0].finished and len(stopped[0]) <= 5


def _sequence_logprob(model, prompt: list[int], ids: list[int]) -> float:  # noqa: ANN001
    tokens = torch.tensor([prompt + ids])
    with torch.no_grad():
        logp = F.log_softmax(model(tokens)[0, :-1].float(), dim=-1)
    targets = tokens[0, 1:]
    return float(logp[torch.arange(len(targets)), targets][len(prompt) - 1 :].sum())


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_beam_scores_are_the_model_log_probabilities(kind: str) -> None:
    model = _model(kind)
    n = 8
    beams = beam_search(model, PROMPTS, beam_size=4, max_new_tokens=n, length_penalty=0.0)
    alone = [
        beam_search(model, [p], beam_size=4, max_new_tokens=n, length_penalty=0.0)[0]
        for p in PROMPTS
    ]
    for prompt, beam, single in zip(PROMPTS, beams, alone, strict=True):
        assert len(beam.token_ids) == n
        assert beam.score == pytest.approx(
            _sequence_logprob(model, prompt, beam.token_ids), abs=1e-4
        )
        assert beam.token_ids == single.token_ids  # batching does not change the search


def test_gpt_decodes_past_its_context_with_a_sliding_window() -> None:
    model = _model("gpt", max_seq_len=16)
    prompt = [[1, 2, 3, 4]]
    long = _greedy(model, prompt, use_cache=True, n=40)[0]
    assert len(long) == 40
    # Until the context first fills, the window changes nothing.
    assert long[:12] == _greedy(model, prompt, use_cache=False, n=12)[0]
