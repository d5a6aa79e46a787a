"""The compiled decode step (`lmforge/infer/compiled.py`) computes what the eager model computes:
the same greedy tokens for a single prompt and for a left-padded batch (the cache's masked path),
with logits equal to eager ones up to float summation order; the LSTM falls back to eager."""

from __future__ import annotations

import pytest
import torch

from lmforge.infer.compiled import compile_decode_step
from lmforge.infer.generator import GenerationParams, Generator
from lmforge.models import GPTConfig, LSTMConfig, build_model

VOCAB = 40
PROMPTS = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5, 8, 9, 7, 9]]

pytestmark = pytest.mark.slow  # each compile of a new graph takes ~10-20 s on 2 cores


def _gpt() -> torch.nn.Module:
    torch.manual_seed(1)
    cfg = GPTConfig(
        n_layers=2,
        n_heads=2,
        d_model=32,
        max_seq_len=64,
        pos_emb="learned",
        norm="layernorm",
        mlp="gelu",
        bias=True,
    )
    return build_model(cfg, VOCAB).eval()


def _greedy(generator: Generator, prompts: list[list[int]]) -> list[list[int]]:
    params = GenerationParams(max_new_tokens=20, temperature=0)
    return [c.token_ids for c in generator.generate(prompts, params)]


def test_compiled_step_matches_eager_logits_and_tokens() -> None:
    model = _gpt()
    step = compile_decode_step(model)
    with torch.inference_mode():
        eager_cache, compiled_cache = model.init_cache(1), model.init_cache(1)
        prompt = torch.tensor([PROMPTS[0]])
        model(prompt, cache=eager_cache)
        model(prompt, cache=compiled_cache)
        token = torch.tensor([[7]])
        for _ in range(6):  # several steps: the cache length changes without a recompile
            eager = model(token, cache=eager_cache)[:, -1]
            compiled = step(token, compiled_cache)
            torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
            token = eager.argmax(-1, keepdim=True)
    eager_gen, compiled_gen = Generator(model), Generator(model, compile=True)
    assert _greedy(compiled_gen, [PROMPTS[0]]) == _greedy(eager_gen, [PROMPTS[0]])
    # A left-padded batch takes the masked path; every row still matches eager decoding.
    batch = _greedy(compiled_gen, PROMPTS)
    assert batch == _greedy(eager_gen, PROMPTS)
    assert len({tuple(row) for row in batch}) > 1


def test_lstm_decodes_eagerly_with_compile_requested() -> None:
    torch.manual_seed(1)
    model = build_model(LSTMConfig(n_layers=1, d_model=16, d_hidden=24), VOCAB).eval()
    compiled = Generator(model, compile=True)
    assert compiled.step is None  # nothing to compile: eager decoding, rows still compacted
    assert _greedy(compiled, PROMPTS) == _greedy(Generator(model), PROMPTS)
