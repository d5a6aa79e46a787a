"""The Generator's logic against a mock model with fixed logits (a bigram table), so sampling and
bookkeeping bugs are not hidden by model randomness."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from lmforge.infer.generate import generate
from lmforge.infer.generator import GenerationParams, Generator, left_pad

V = 8


class _Cache:
    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.reorders: list[list[int]] = []

    def reorder_(self, index: torch.Tensor) -> None:
        self.reorders.append(index.tolist())
        self.batch_size = len(index)


class BigramModel(nn.Module):
    """Next-token logits are `table[last token]`; records the shape of every forward call."""

    def __init__(self, table: torch.Tensor, max_context: int | None = None) -> None:
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)
        self.vocab_size = table.size(0)
        self._context = max_context
        self.calls: list[tuple[int, int]] = []
        self.caches: list[_Cache] = []

    @property
    def max_context(self) -> int | None:
        return self._context

    def init_cache(self, batch_size, max_len=None, device=None, dtype=None):  # noqa: ANN001
        self.caches.append(_Cache(batch_size))
        return self.caches[-1]

    def forward(self, tokens, cache=None, pad_mask=None):  # noqa: ANN001
        if cache is not None:
            assert cache.batch_size == tokens.size(0)
        self.calls.append(tuple(tokens.shape))
        return self.table[tokens]  # (B, T) -> (B, T, V)


def chain_table() -> torch.Tensor:
    """Greedy successor of t is (t + 1) % V."""
    table = torch.zeros(V, V)
    for t in range(V):
        table[t, (t + 1) % V] = 5.0
    return table


class CharDecoder:
    def decode(self, ids) -> str:  # noqa: ANN001
        return "".join("abcdefgh"[i] for i in ids)


def greedy(**kw) -> GenerationParams:  # noqa: ANN003
    return GenerationParams(temperature=0, **kw)


def test_greedy_follows_the_table_and_stops_at_length() -> None:
    model = BigramModel(chain_table())
    (c,) = Generator(model).generate([[0]], greedy(max_new_tokens=5))
    assert c.token_ids == [1, 2, 3, 4, 5]
    assert c.finish_reason == "length" and c.stop_id is None
    # One prefill, then one single-token step per new token except the last.
    assert model.calls == [(1, 1)] + [(1, 1)] * 4


def test_stop_id_ends_a_row_without_being_kept() -> None:
    (c,) = Generator(BigramModel(chain_table())).generate([[0]], greedy(stop_ids=(3,)))
    assert c.token_ids == [1, 2] and c.stop_id == 3 and c.finish_reason == "stop_id"
    assert generate(BigramModel(chain_table()), [0], 10, temperature=0, stop_ids=[3]) == [1, 2, 3]


def test_batch_of_different_lengths_equals_single_rows_and_compacts() -> None:
    prompts = [[0], [5, 6], [2, 3, 4], [7]]
    params = greedy(max_new_tokens=6, stop_ids=(3,))
    single = [Generator(BigramModel(chain_table())).generate([p], params)[0] for p in prompts]
    model = BigramModel(chain_table())
    batch = Generator(model).generate(prompts, params)
    assert [c.token_ids for c in batch] == [c.token_ids for c in single]
    assert [c.token_ids for c in batch] == [[1, 2], [7, 0, 1, 2], [5, 6, 7, 0, 1, 2], [0, 1, 2]]
    assert [c.prompt_ids for c in batch] == prompts
    # Left-padded prefill, then finished rows leave the batch.
    assert model.calls[0] == (4, 3)
    assert min(b for b, _ in model.calls) < 4
    assert model.caches[0].reorders


def test_stop_string_cuts_text_and_streams_only_before_it() -> None:
    gen = Generator(BigramModel(chain_table()), CharDecoder())
    params = greedy(max_new_tokens=7, stop=("de",))
    (c,) = gen.generate([[0]], params)
    assert c.text == "bc" and c.finish_reason == "stop"
    assert "".join(gen.stream([0], params)) == "bc"
    assert "".join(gen.stream([0], greedy(max_new_tokens=3))) == "bcd"


def test_num_samples_seeded_determinism() -> None:
    model = BigramModel(torch.zeros(V, V))  # uniform: every draw is random
    gen = Generator(model)
    params = GenerationParams(max_new_tokens=12, temperature=1.0, seed=11)
    a = [c.token_ids for c in gen.generate([[0], [1]], params, num_samples=3)]
    b = [c.token_ids for c in gen.generate([[0], [1]], params, num_samples=3)]
    assert len(a) == 6 and a == b
    assert len({tuple(x) for x in a}) == 6  # rows draw independently
    other = [c.token_ids for c in gen.generate([[0], [1]], GenerationParams(12, seed=12), 3)]
    assert other != a


def test_repetition_penalty_avoids_seen_tokens() -> None:
    table = torch.zeros(V, V)
    table[:, 1] = 2.0  # token 1 is always the favourite ...
    table[:, 2] = 1.5  # ... token 2 the runner-up
    model = BigramModel(table)
    (plain,) = Generator(model).generate([[0]], greedy(max_new_tokens=3))
    assert plain.token_ids == [1, 1, 1]
    (pen,) = Generator(model).generate([[0]], greedy(max_new_tokens=3, repetition_penalty=2.0))
    # 2.0 / 2 = 1.0 < 1.5 once 1 is seen; then both are seen: 1.0 vs 0.75.
    assert pen.token_ids == [1, 2, 1]
    # Prompt tokens count as seen too.
    (pen,) = Generator(model).generate([[1]], greedy(max_new_tokens=1, repetition_penalty=2.0))
    assert pen.token_ids == [2]


def test_long_prompt_is_cropped_from_the_left_with_a_note(caplog) -> None:
    model = BigramModel(chain_table(), max_context=4)
    with caplog.at_level(logging.WARNING):
        (c,) = Generator(model).generate([[0, 1, 2, 3, 4, 5]], greedy(max_new_tokens=2))
    assert c.prompt_ids == [2, 3, 4, 5] and c.cropped == 2
    assert c.token_ids == [6, 7]
    assert "prompt has 6 tokens" in caplog.text and "using the last 4" in caplog.text


def test_full_context_rebuilds_from_the_newest_half() -> None:
    model = BigramModel(chain_table(), max_context=4)
    (c,) = Generator(model).generate([[0, 1]], greedy(max_new_tokens=6))
    assert c.token_ids == [2, 3, 4, 5, 6, 7]
    # prefill 2, step, step (slots 4 = context) -> rebuild from 2 tokens, step, step -> rebuild.
    assert model.calls == [(1, 2), (1, 1), (1, 1), (1, 2), (1, 1), (1, 1)]


def test_uncached_decoding_recomputes_the_window() -> None:
    model = BigramModel(chain_table(), max_context=3)
    (c,) = Generator(model).generate([[0]], greedy(max_new_tokens=4, use_cache=False))
    assert c.token_ids == [1, 2, 3, 4]
    assert model.calls == [(1, 1), (1, 2), (1, 3), (1, 3)]


def test_left_pad() -> None:
    tokens, mask = left_pad([[1, 2, 3], [4]], torch.device("cpu"), pad_id=0)
    assert tokens.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[False, False, False], [True, True, False]]
    assert left_pad([[1], [2]], torch.device("cpu"))[1] is None


def test_bad_params_and_prompts() -> None:
    with pytest.raises(ValueError, match="temperature"):
        GenerationParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        GenerationParams(top_p=0)
    with pytest.raises(ValueError, match="at least one token"):
        Generator(BigramModel(chain_table())).generate([[]], greedy())
