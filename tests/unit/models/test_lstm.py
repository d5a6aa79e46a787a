"""LSTM language model: state-as-cache parity, left-padding, truncated-BPTT detach, init loss,
overfitting, tying with a projection, parameter/FLOP counts. Tiny sizes, CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import validate_config
from lmforge.errors import ConfigError
from lmforge.models import LSTMConfig, LSTMLanguageModel, build_model

VOCAB = 64


def make(seed: int = 0, **overrides) -> LSTMLanguageModel:
    torch.manual_seed(seed)
    fields = dict(n_layers=2, d_model=32, d_hidden=48)
    return build_model(LSTMConfig(**(fields | overrides)), VOCAB).eval()


SETTINGS = [{}, {"tie_embeddings": True}, {"tie_embeddings": True, "d_hidden": 32, "n_layers": 1}]


@pytest.mark.parametrize("overrides", SETTINGS)
def test_state_cache_matches_full_forward(overrides):
    model = make(**overrides)
    tokens = torch.randint(0, VOCAB, (3, 20))
    full = model(tokens)
    state = model.init_cache(3, max_len=20)
    pieces = [model(tokens[:, :7], cache=state)]
    pieces += [model(tokens[:, t : t + 1], cache=state) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert model.max_context is None


def test_left_padded_batch_matches_each_prompt_alone():
    model = make()
    lengths, n_new = [5, 2, 8], 3
    prompts = [torch.randint(1, VOCAB, (n,)) for n in lengths]
    continuations = torch.randint(1, VOCAB, (3, n_new))
    width = max(lengths)
    batch = torch.zeros(3, width, dtype=torch.long)
    pad_mask = torch.ones(3, width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        batch[row, width - len(prompt) :] = prompt
        pad_mask[row, width - len(prompt) :] = False

    state = model.init_cache(3)
    prefill = model(batch, cache=state, pad_mask=pad_mask)
    decoded = torch.cat([model(continuations[:, i : i + 1], cache=state) for i in range(n_new)], 1)
    for row, prompt in enumerate(prompts):
        alone = model(torch.cat([prompt, continuations[row]])[None])[0]
        n = len(prompt)
        torch.testing.assert_close(prefill[row, width - n :], alone[:n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(decoded[row], alone[n:], atol=1e-5, rtol=1e-5)


def test_pad_mask_without_pads_and_paused_rows():
    model = make()
    tokens = torch.randint(0, VOCAB, (2, 6))
    no_pads = model(tokens, pad_mask=torch.zeros(2, 6, dtype=torch.bool))
    torch.testing.assert_close(no_pads, model(tokens))
    state = model.init_cache(2)
    model(tokens[:, :4], cache=state)
    model(tokens[:, 4:5], cache=state, pad_mask=torch.tensor([[False], [True]]))
    out = model(tokens[:, 5:6], cache=state)
    alone = model(torch.cat([tokens[1, :4], tokens[1, 5:6]])[None])
    torch.testing.assert_close(out[1, -1], alone[0, -1], atol=1e-5, rtol=1e-5)


def test_truncated_bptt_with_detach():
    model = make().train()
    tokens = torch.randint(0, VOCAB, (2, 24))
    state = model.init_cache(2)
    for window in tokens.split(8, dim=1):
        logits = model(window, cache=state)
        F.cross_entropy(logits.flatten(0, 1), window.flatten()).backward()
        assert state.h.requires_grad
        assert state.detach_() is state and not state.h.requires_grad
    # Without detach_, the second window's backward would reach into the first window's freed
    # graph and raise; getting here means the windows were cut apart.
    assert all(p.grad is not None for p in model.parameters())


def test_reorder_selects_rows():
    model = make()
    tokens = torch.randint(0, VOCAB, (3, 6))
    state = model.init_cache(3)
    model(tokens[:, :5], cache=state)
    state.reorder_(torch.tensor([2, 0]))
    out = model(tokens[[2, 0], 5:], cache=state)
    torch.testing.assert_close(out, model(tokens[[2, 0]])[:, 5:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides", SETTINGS[:2])
def test_loss_at_init_is_log_vocab(overrides):
    model = make(**overrides)
    tokens, targets = torch.randint(0, VOCAB, (2, 8, 16))
    with torch.no_grad():
        loss = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
    assert abs(loss.item() - math.log(VOCAB)) < 0.05


def test_overfits_one_batch():
    model = make().train()
    tokens = torch.randint(0, VOCAB, (4, 16))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(200):
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("overrides", SETTINGS)
def test_num_params_and_flops(overrides):
    model = make(**overrides)
    cfg = model.config
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    assert model.num_params(include_embeddings=False) == model.num_params() - VOCAB * 32
    lstm = sum(p.numel() for p in model.lstm.parameters())
    proj = 48 * 32 if model.proj is not None else 0
    head = model.lm_head.weight.numel() + VOCAB
    assert model.flops_per_token(16) == 6 * (lstm + proj + head)
    assert (model.proj is not None) == (cfg.tie_embeddings and cfg.d_hidden != cfg.d_model)


def test_forget_gate_bias_and_tying():
    model = make(tie_embeddings=True)
    assert model.lm_head.weight is model.tok_emb.weight
    H = 48
    gate_bias = model.lstm.bias_ih_l1 + model.lstm.bias_hh_l1
    assert torch.all(gate_bias[H : 2 * H] == 1.0)


def test_bf16_autocast():
    model = make()
    tokens = torch.randint(0, VOCAB, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        state = model.init_cache(2)
        out = model(tokens, cache=state)
        padded = model(tokens, pad_mask=torch.arange(8).expand(2, 8) < 2)
    assert out.dtype == padded.dtype == torch.float32
    torch.testing.assert_close(out, model(tokens), atol=0.05, rtol=0.05)


def test_config_rejects_keys_of_the_other_kind():
    with pytest.raises(ConfigError, match="unknown config key 'n_heads'"):
        validate_config(LSTMConfig, {"n_heads": 4})
