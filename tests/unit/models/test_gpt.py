"""GPT properties: causality, KV-cache and left-padding parity, SDPA == manual attention, init loss,
overfitting, parameter counts, GQA and config validation. Tiny sizes, CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import validate_config
from lmforge.errors import ConfigError
from lmforge.models import GPTConfig, build_model
from lmforge.models import gpt as gpt_module

VOCAB = 64


def tiny(**overrides) -> GPTConfig:
    fields = dict(n_layers=2, n_heads=4, d_model=32, d_ff=64, max_seq_len=16)
    return GPTConfig(**(fields | overrides))


def make(seed: int = 0, **overrides) -> gpt_module.GPT:
    torch.manual_seed(seed)
    return build_model(tiny(**overrides), VOCAB).eval()


GPT2_STYLE = {"pos_emb": "learned", "norm": "layernorm", "mlp": "gelu", "bias": True}
SETTINGS = [
    {},  # llama-style
    GPT2_STYLE | {"tie_embeddings": True},
    {"n_kv_heads": 1},
    {"n_kv_heads": 2, "zero_init_output": True},
]


@pytest.mark.parametrize("overrides", SETTINGS)
def test_causality(overrides):
    model = make(**overrides)
    tokens = torch.randint(0, VOCAB, (2, 16))
    base = model(tokens)
    for t in (0, 7, 15):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % VOCAB
        out = model(changed)
        assert torch.equal(out[:, :t], base[:, :t])
        assert not torch.allclose(out[:, t:], base[:, t:])


@pytest.mark.parametrize("overrides", SETTINGS)
def test_cache_matches_full_forward(overrides):
    model = make(**overrides)
    tokens = torch.randint(0, VOCAB, (3, 16))
    full = model(tokens)
    cache = model.init_cache(3)
    pieces = [model(tokens[:, :5], cache=cache)]
    pieces += [model(tokens[:, t : t + 1], cache=cache) for t in range(5, 12)]
    pieces.append(model(tokens[:, 12:], cache=cache))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 16 and cache.pos.tolist() == [16, 16, 16]


@pytest.mark.parametrize("overrides", SETTINGS[:2])
def test_left_padded_batch_matches_each_prompt_alone(overrides):
    model = make(**overrides)
    lengths, n_new = [5, 2, 8], 4
    prompts = [torch.randint(1, VOCAB, (n,)) for n in lengths]
    continuations = torch.randint(1, VOCAB, (3, n_new))
    width = max(lengths)
    batch = torch.zeros(3, width, dtype=torch.long)  # pad id 0, arbitrary
    pad_mask = torch.ones(3, width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        batch[row, width - len(prompt) :] = prompt
        pad_mask[row, width - len(prompt) :] = False

    cache = model.init_cache(3, max_len=width + n_new)
    prefill = model(batch, cache=cache, pad_mask=pad_mask)
    steps = [model(continuations[:, i : i + 1], cache=cache) for i in range(n_new)]
    decoded = torch.cat(steps, dim=1)
    # The same without a cache: one padded forward.
    no_cache = model(torch.cat([batch, continuations], 1), pad_mask=F.pad(pad_mask, (0, n_new)))

    for row, prompt in enumerate(prompts):
        alone = model(torch.cat([prompt, continuations[row]])[None])[0]
        n = len(prompt)
        torch.testing.assert_close(prefill[row, width - n :], alone[:n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(decoded[row], alone[n:], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(no_cache[row, width - n :], alone, atol=1e-5, rtol=1e-5)
    assert cache.pos.tolist() == [n + n_new for n in lengths]


@pytest.mark.parametrize("overrides", SETTINGS[:3])
def test_unpadded_cache_fast_path_matches_the_masked_path(overrides):
    # A cache without pads skips per-row positions and masks; forcing `has_pads` takes the
    # general path, which must give the same logits and the same cache state.
    model = make(**overrides)
    tokens = torch.randint(0, VOCAB, (2, 10))
    fast, general = model.init_cache(2), model.init_cache(2)
    general.has_pads = True
    outs = []
    for cache in (fast, general):
        first = model(tokens[:, :6], cache=cache, pad_mask=torch.zeros(2, 6, dtype=torch.bool))
        rest = [model(tokens[:, t : t + 1], cache=cache) for t in range(6, 10)]
        outs.append(torch.cat([first, *rest], dim=1))
    assert not fast.has_pads
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-6)
    assert fast.pos.tolist() == general.pos.tolist() == [10, 10]
    assert torch.equal(fast.valid, general.valid) and fast.length == general.length == 10


def test_finished_row_can_be_paused_with_pad_mask():
    model = make()
    tokens = torch.randint(0, VOCAB, (2, 6))
    cache = model.init_cache(2)
    model(tokens[:, :4], cache=cache)
    model(tokens[:, 4:5], cache=cache, pad_mask=torch.tensor([[False], [True]]))
    out = model(tokens[:, 5:6], cache=cache)
    alone = model(torch.cat([tokens[1, :4], tokens[1, 5:6]])[None])
    torch.testing.assert_close(out[1, -1], alone[0, -1], atol=1e-5, rtol=1e-5)


def test_cache_reorder_selects_rows():
    model = make()
    tokens = torch.randint(0, VOCAB, (3, 6))
    cache = model.init_cache(3)
    model(tokens[:, :5], cache=cache)
    cache.reorder_(torch.tensor([2, 0]))
    out = model(tokens[[2, 0], 5:], cache=cache)
    torch.testing.assert_close(out, model(tokens[[2, 0]])[:, 5:], atol=1e-5, rtol=1e-5)


def test_too_long_inputs_are_config_errors():
    model = make()
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.init_cache(1, max_len=4)
    with pytest.raises(ValueError, match="init_cache"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
    # Pads take cache slots but not positions: 10 pads + 16 real tokens fit; a 17th does not.
    cache = model.init_cache(1, max_len=40)
    pads = torch.arange(16) < 10
    model(torch.zeros(1, 16, dtype=torch.long), cache=cache, pad_mask=pads[None])
    model(torch.zeros(1, 10, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="position 16"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


# ---------------------------------------------------------------------------------------------
# SDPA against explicit attention


def manual_attention(q, k, v, mask, dropout_p):
    """softmax(Q K^T / sqrt(d) + mask) V with GQA by repetition; mask None = causal."""
    assert dropout_p == 0.0
    groups = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is None:
        T, S = q.size(-2), k.size(-2)
        mask = torch.ones(T, S, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_equals_manual_and_math_attention(kv_heads, masked):
    torch.manual_seed(0)
    q = torch.randn(2, 4, 6, 8, requires_grad=True)
    k = torch.randn(2, kv_heads, 9 if masked else 6, 8, requires_grad=True)
    v = torch.randn_like(k, requires_grad=True)
    mask = None
    if masked:  # 3 cached slots, a padded first slot in row 0
        valid = torch.ones(2, 9, dtype=torch.bool)
        valid[0, 0] = False
        mask = gpt_module.padded_attention_mask(valid, 3, 6)
    functions = [gpt_module.attend, manual_attention]
    if not masked:  # train.attention_kernel=math's path (plain causal attention only)
        functions.append(lambda q, k, v, mask, p: gpt_module.attend_math(q, k, v, p))
    grads = []
    for fn in functions:
        out = fn(q, k, v, mask, 0.0)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), q.grad.clone(), k.grad.clone(), v.grad.clone()))
        q.grad = k.grad = v.grad = None
    for other in grads[1:]:
        for a, b in zip(grads[0], other, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_model_with_manual_attention_matches(monkeypatch):
    model = make(n_kv_heads=2)
    tokens = torch.randint(0, VOCAB, (2, 16))

    def run():
        model.zero_grad()
        logits = model(tokens)
        F.cross_entropy(logits.flatten(0, 1), tokens.roll(-1, 1).flatten()).backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    fast_logits, fast_grads = run()
    monkeypatch.setattr(gpt_module, "attend", manual_attention)
    ref_logits, ref_grads = run()
    torch.testing.assert_close(fast_logits, ref_logits, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_math_attention_context_switches_the_model_and_restores_sdpa(monkeypatch):
    model = make(n_kv_heads=2)
    tokens = torch.randint(0, VOCAB, (2, 16))
    calls = []
    real = gpt_module.attend_math
    monkeypatch.setattr(gpt_module, "attend_math", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        reference = model(tokens)
        assert not calls
        with gpt_module.math_attention():
            switched = model(tokens)
        assert len(calls) == model.config.n_layers
        again = model(tokens)
    assert len(calls) == model.config.n_layers  # SDPA again after the block
    torch.testing.assert_close(switched, reference, atol=1e-5, rtol=1e-5)
    assert torch.equal(again, reference)


def test_math_attention_under_bf16_autocast_is_as_accurate_as_sdpa():
    """Against the fp32 logits, bf16 math attention errs no more than bf16 SDPA (x2 slack)."""
    model = make()
    tokens = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        exact = model(tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sdpa = model(tokens).float()
            with gpt_module.math_attention():
                math_path = model(tokens).float()
    sdpa_error = (sdpa - exact).abs().max()
    math_error = (math_path - exact).abs().max()
    assert math_error <= 2 * sdpa_error + 1e-4 * exact.abs().max(), (math_error, sdpa_error)


# ---------------------------------------------------------------------------------------------
# Training behaviour, counting


@pytest.mark.parametrize("overrides", SETTINGS[:2])
def test_loss_at_init_is_log_vocab(overrides):
    model = make(**overrides)
    tokens, targets = torch.randint(0, VOCAB, (2, 8, 16))
    with torch.no_grad():
        # Independent targets: with tied embeddings the input token itself scores slightly higher.
        loss = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
    assert abs(loss.item() - math.log(VOCAB)) < 0.05


def test_overfits_one_batch():
    model = make().train()
    tokens = torch.randint(0, VOCAB, (4, 16))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
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
    embeddings = VOCAB * 32 + (16 * 32 if cfg.pos_emb == "learned" else 0)
    assert model.num_params(include_embeddings=False) == model.num_params() - embeddings
    head = VOCAB * 32 if cfg.tie_embeddings else 0
    expected = 6 * (model.num_params(False) + head) + 12 * 2 * 32 * 16
    assert model.flops_per_token(16) == expected
    assert model.max_context == 16


def test_gqa_shapes_and_cache_size():
    for kv in (1, 4):
        model = make(n_kv_heads=kv)
        assert model.blocks[0].attn.k_proj.weight.shape == (kv * 8, 32)
        assert model.init_cache(2).k.shape == (2, 2, kv, 16, 8)


def test_init_scales_residual_projections():
    model = make(n_layers=8, d_model=64, d_ff=256, n_heads=4)
    o_std = model.blocks[0].attn.o_proj.weight.std().item()
    q_std = model.blocks[0].attn.q_proj.weight.std().item()
    assert abs(q_std - 0.02) < 0.002 and abs(o_std - 0.02 / 4) < 0.001
    zero = make(zero_init_output=True)
    assert not zero.blocks[1].mlp.down_proj.weight.any()


def test_derived_d_ff():
    assert GPTConfig(d_model=256).ff_dim == 704  # 8/3 * 256 = 682 -> next multiple of 64
    assert GPTConfig(d_model=256, mlp="gelu").ff_dim == 1024
    assert GPTConfig(d_model=256, d_ff=100).ff_dim == 100
    assert GPTConfig(n_heads=8, n_kv_heads=2).head_dim == 32


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"d_model": 30, "n_heads": 4}, "d_model=30 is not divisible by n_heads=4"),
        ({"n_heads": 4, "n_kv_heads": 3}, "n_heads=4 is not divisible by n_kv_heads=3"),
        ({"d_model": 12, "n_heads": 4}, "even head_dim"),
        ({"pos_emb": "alibi"}, "pos_emb"),
        ({"n_layer": 2}, "unknown config key 'n_layer'"),
    ],
)
def test_config_validation_names_keys(raw, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(GPTConfig, raw)


def test_bf16_autocast_forward_and_cache():
    model = make()
    tokens = torch.randint(0, VOCAB, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(tokens)
        cache = model.init_cache(2)
        assert cache.k.dtype == torch.bfloat16
        step = torch.cat([model(tokens[:, :4], cache=cache), model(tokens[:, 4:], cache=cache)], 1)
    assert full.dtype == torch.float32
    torch.testing.assert_close(step, full, atol=0.05, rtol=0.05)
