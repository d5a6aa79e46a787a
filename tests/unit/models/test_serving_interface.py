"""The model interface the server and the lab rely on: last-position logits, rows joining and
leaving a running cache (continuous batching), and recorded attention maps. Tiny models, fp32."""

from __future__ import annotations

import pytest
import torch

from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.models.gpt import attend, record_attention

VOCAB = 48
GPT_SETTINGS = [
    {},  # llama-style, rope
    {"pos_emb": "learned", "norm": "layernorm", "mlp": "gelu", "bias": True},
    {"n_kv_heads": 2},
]


def make_gpt(**overrides):
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=2, n_heads=4, d_model=32, d_ff=64, max_seq_len=32, init_std=0.1)
    return build_model(cfg.model_copy(update=overrides), VOCAB).eval()


def make_lstm():
    torch.manual_seed(0)
    return build_model(LSTMConfig(n_layers=2, d_model=24, d_hidden=32), VOCAB).eval()


MODELS = [pytest.param(lambda s=s: make_gpt(**s), id=f"gpt{i}") for i, s in enumerate(GPT_SETTINGS)]
MODELS.append(pytest.param(make_lstm, id="lstm"))


@pytest.mark.parametrize("factory", MODELS)
def test_last_only_logits_equal_the_full_last_column(factory):
    model = factory()
    tokens = torch.randint(0, VOCAB, (3, 11))
    with torch.no_grad():
        full = model(tokens)
        # Within rounding, not bitwise: the head multiplies 3 or 12 rows instead of 33, and MKL
        # picks its kernel by the row count (bit-equal on the Xeon, 3e-7 apart on a Zen 4).
        exact = {"atol": 1e-6, "rtol": 1e-6}
        torch.testing.assert_close(model(tokens, logits_to_keep=1), full[:, -1:], **exact)
        torch.testing.assert_close(model(tokens, logits_to_keep=4), full[:, -4:], **exact)
        cache = model.init_cache(3)
        last = model(tokens, cache=cache, logits_to_keep=1)
    torch.testing.assert_close(last, full[:, -1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("factory", MODELS)
def test_last_only_logits_train_on_the_same_gradients(factory):
    # A loss on the last positions only (the lab's one-token answers) through logits_to_keep:
    # the last block's MLP and the head skip the other positions, the gradients stay the same.
    model = factory().train()
    tokens = torch.randint(0, VOCAB, (3, 11))
    grads = []
    for keep in (0, 2):
        model.zero_grad()
        logits = model(tokens, logits_to_keep=keep)[:, -2:]
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, :2].flatten()).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1])
    for full, kept in zip(*grads, strict=True):
        torch.testing.assert_close(kept, full, atol=1e-6, rtol=1e-5)


def _alone(model, prompt: list[int], continuation: list[int]) -> torch.Tensor:
    """Logits (len(continuation) + 1, V) of one sequence decoded alone with a cache."""
    cache = model.init_cache(1, max_len=len(prompt) + len(continuation) + 1)
    out = [model(torch.tensor([prompt]), cache=cache)[0, -1]]
    for tok in continuation:
        out.append(model(torch.tensor([[tok]]), cache=cache)[0, -1])
    return torch.stack(out)


@pytest.mark.parametrize("factory", MODELS)
def test_a_row_joining_a_running_batch_gets_the_logits_it_gets_alone(factory):
    """Two rows run for a while, a third (longer prompt, so the batch must shift right) and a
    fourth (shorter, so it is right-aligned after empty slots) join, one row leaves, the cache is
    trimmed; every row's logits equal its logits alone at every step."""
    model = factory()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (3, 5, 9, 2)]
    conts = [torch.randint(0, VOCAB, (12,), generator=g).tolist() for _ in prompts]
    expected = [_alone(model, p, c) for p, c in zip(prompts, conts, strict=True)]
    got: dict[int, list[torch.Tensor]] = {i: [] for i in range(4)}
    fed = dict.fromkeys(range(4), 0)  # continuation tokens fed per request
    batch = model.init_cache(0, max_len=40)
    rows: list[int] = []  # request id of each batch row

    def join(i: int) -> None:
        single = model.init_cache(1, max_len=len(prompts[i]))
        got[i].append(model(torch.tensor([prompts[i]]), cache=single, logits_to_keep=1)[0, -1])
        batch.add_rows_(single)
        rows.append(i)

    def step() -> None:
        tokens = torch.tensor([[conts[i][fed[i]]] for i in rows])
        logits = model(tokens, cache=batch)[:, -1]
        for b, i in enumerate(rows):
            fed[i] += 1
            got[i].append(logits[b])

    with torch.no_grad():
        join(0)
        join(1)
        for _ in range(2):
            step()
        join(2)  # 9 prompt slots > 7 used: the running rows shift right
        step()
        join(3)  # 2 slots < 10 used: empty slots before it
        for _ in range(3):
            step()
        order = batch.remove_rows_([rows.index(2)])  # the last row moves into the hole
        rows[:] = [rows[b] for b in order]
        assert rows == [0, 1, 3]
        batch.trim_()
        for _ in range(4):
            step()
    for i in range(4):
        n = len(got[i])
        torch.testing.assert_close(torch.stack(got[i]), expected[i][:n], atol=1e-5, rtol=1e-5)


def test_trim_returns_to_the_fast_path_once_rows_are_aligned():
    model = make_gpt()
    batch = model.init_cache(0, max_len=30)
    with torch.no_grad():
        for n in (6, 2):
            single = model.init_cache(1, max_len=n)
            model(torch.randint(0, VOCAB, (1, n)), cache=single)
            batch.add_rows_(single)
        assert batch.has_pads and batch.length == 6
        batch.reorder_(torch.tensor([1]))  # the long row leaves
        assert batch.trim_() == 4
        assert batch.length == 2 and not batch.has_pads
        batch.reorder_(torch.tensor([], dtype=torch.long))
        assert batch.batch_size == 0 and batch.length == 0


@pytest.mark.parametrize("settings", GPT_SETTINGS)
def test_recorded_attention_is_a_distribution_that_reproduces_sdpa(settings):
    model = make_gpt(**settings)
    tokens = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        fast = model(tokens)
        with record_attention(model) as maps:
            slow = model(tokens)
        assert all(attn.record is None for attn in (b.attn for b in model.blocks))
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=1e-5)
    assert len(maps) == model.config.n_layers
    for probs in maps:
        assert probs.shape == (2, model.config.n_heads, 10, 10)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, model.config.n_heads, 10))
        assert torch.all(probs.triu(1) == 0)  # causal: nothing attends to the future


def test_recorded_probabilities_times_values_equal_sdpa_with_gqa_and_a_mask():
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 7, 8)
    v = torch.randn_like(k)
    mask = torch.ones(2, 1, 3, 7, dtype=torch.bool).tril(4)
    mask[0, :, :, 0] = False
    from lmforge.models.gpt import attend_explicit

    out, probs = attend_explicit(q, k, v, mask)
    torch.testing.assert_close(out, attend(q, k, v, mask, 0.0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs @ v.repeat_interleave(2, dim=1), out)
    assert torch.all(probs[0, :, :, 0] == 0)


@pytest.mark.parametrize("factory", MODELS)
def test_remove_rows_moves_the_last_rows_into_the_holes(factory):
    model = factory()
    batch = model.init_cache(0, max_len=20)
    with torch.no_grad():
        for n in (3, 4, 5, 6, 7):
            single = model.init_cache(1, max_len=n)
            model(torch.randint(0, VOCAB, (1, n)), cache=single)
            batch.add_rows_(single)
        before = [
            batch.h[:, i].clone() if hasattr(batch, "h") else batch.pos[i].item() for i in range(5)
        ]
        order = batch.remove_rows_([0, 3])
        assert order == [4, 1, 2]
        after = [batch.h[:, i] if hasattr(batch, "h") else batch.pos[i].item() for i in range(3)]
    for i, old in enumerate(order):
        if isinstance(after[i], torch.Tensor):
            assert torch.equal(after[i], before[old])
        else:
            assert after[i] == before[old]
    assert batch.batch_size == 3
    assert batch.remove_rows_([0, 1, 2]) == [] and batch.batch_size == 0
