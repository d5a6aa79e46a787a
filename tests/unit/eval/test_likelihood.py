"""Likelihood scoring agrees with a direct per-choice loss computation, batched or not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.data.tokenizer import EOT, build_char, train_bpe
from lmforge.eval.likelihood import encode_pair, loglikelihood, pick, score_choices
from lmforge.models import GPTConfig, LSTMConfig, build_model

TEXT = "the film is good . the film is bad . a great movie , a terrible plot .\n" * 5


@pytest.fixture(scope="module")
def char_tok():
    return build_char([TEXT], [EOT])


def _models(vocab: int):
    torch.manual_seed(0)
    gpt = GPTConfig(n_layers=2, n_heads=2, d_model=32, max_seq_len=64)
    lstm = LSTMConfig(n_layers=2, d_model=32, d_hidden=32)
    return [build_model(gpt, vocab).eval(), build_model(lstm, vocab).eval()]


@torch.no_grad()
def _direct_loglik(model, context_ids: list[int], continuation_ids: list[int]) -> float:
    full = torch.tensor(context_ids + continuation_ids)
    logits = model(full[None, :-1])[0]  # (T, V)
    n = len(continuation_ids)
    nll = F.cross_entropy(logits[-n:], full[-n:], reduction="sum")
    return -float(nll)


def test_scores_match_direct_computation(char_tok):
    context = "a great movie , the film is"
    choices = [" good", " bad", " a terrible plot", " great"]
    for model in _models(char_tok.vocab_size):
        # batch_size=3 mixes lengths inside a batch, so right padding is exercised.
        scores = score_choices(model, char_tok, context, choices, batch_size=3)
        for choice, score in zip(choices, scores, strict=True):
            ctx, cont = encode_pair(char_tok, context, choice)
            assert score.loglik == pytest.approx(_direct_loglik(model, ctx, cont), abs=1e-4)
            assert score.num_tokens == len(cont) == len(choice)
            assert score.num_chars == len(choice)
            assert score.num_bytes == len(choice.encode("utf-8"))


def test_batching_does_not_change_scores(char_tok):
    model = _models(char_tok.vocab_size)[0]
    requests = [encode_pair(char_tok, "the film", " is " + w) for w in ("good", "bad", "ok .")]
    requests.append(encode_pair(char_tok, "a", " b"))
    one = loglikelihood(model, requests, batch_size=1)
    many = loglikelihood(model, requests, batch_size=4)
    assert [r[0] for r in one] == pytest.approx([r[0] for r in many], abs=1e-5)


def test_long_inputs_are_cropped_from_the_left(char_tok):
    model = _models(char_tok.vocab_size)[0]  # max_seq_len 64
    context = TEXT[:200]
    [(ll, _)] = loglikelihood(model, [encode_pair(char_tok, context, " good")])
    ctx, cont = encode_pair(char_tok, context, " good")
    kept = (ctx + cont)[-65:]
    assert ll == pytest.approx(_direct_loglik(model, kept[:-5], kept[-5:]), abs=1e-4)


def test_trailing_context_spaces_move_to_the_continuation():
    tok = train_bpe([TEXT], 300, [EOT], min_frequency=1)
    ctx, cont = encode_pair(tok, "the film is ", "good")
    assert ctx == tok.encode("the film is")
    assert ctx + cont == tok.encode("the film is good")
    # An empty context is conditioned on the end-of-text token, as lm-eval does.
    assert encode_pair(tok, "", "good") == ([tok.eot_id], tok.encode("good"))


def test_pick_is_argmax_and_length_normalised_argmax():
    logliks = [-3.0, -4.0]
    assert pick(logliks) == 0
    assert pick(logliks, lengths=[1, 4]) == 1  # -3/1 < -4/4
