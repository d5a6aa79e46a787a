"""FLOPs per token, counted by hand from the shapes: nothing here calls the model's own counts.

Training FLOPs per token = 6 x (every weight a matmul reads, norms and biases included, the head
included) + 12 x n_layers x d_model x seq_len for attention scores and the weighted sum (PaLM,
appendix B). Worked out for the test models below with the numbers written out.
"""

from __future__ import annotations

import pytest

from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.models.heads import SequenceClassifier, SpanQAHead

V, D, L, FF, T = 64, 32, 2, 64, 16  # vocab, width, layers, MLP width, sequence length


def _gpt(**overrides):
    fields = dict(n_layers=L, n_heads=4, d_model=D, d_ff=FF, max_seq_len=T)
    return build_model(GPTConfig(**(fields | overrides)), V)


@pytest.mark.parametrize(
    ("overrides", "per_layer", "final_norm"),
    [
        # Llama: q,k,v,o 4*32*32; SwiGLU gate, up, down 3*32*64; two RMSNorms 2*32.
        ({}, 4 * 32 * 32 + 3 * 32 * 64 + 2 * 32, 32),
        # GQA with 1 of 4 kv heads (head dim 8): q,o 2*32*32, k,v 2*32*8.
        ({"n_kv_heads": 1}, 2 * 32 * 32 + 2 * 32 * 8 + 3 * 32 * 64 + 2 * 32, 32),
        # GPT-2: +biases on q,k,v,o (4*32); GELU up, down 2*32*64 + biases 64+32;
        # two LayerNorms with bias 2*(32+32).
        (
            {"pos_emb": "learned", "norm": "layernorm", "mlp": "gelu", "bias": True},
            4 * 32 * 32 + 4 * 32 + 2 * 32 * 64 + 64 + 32 + 2 * 64,
            64,
        ),
    ],
)
def test_gpt_flops_by_hand(overrides, per_layer, final_norm):
    head = 64 * 32  # the output head reads V x D weights, tied or not
    weights = L * per_layer + final_norm + head
    attention = 12 * L * D * T
    assert _gpt(**overrides).flops_per_token(T) == 6 * weights + attention
    tied = _gpt(**overrides, tie_embeddings=True)  # tying changes storage, not the matmuls
    assert tied.flops_per_token(T) == 6 * weights + attention


def test_lstm_flops_by_hand():
    # Untied: layer 1 has 4 gates x 48 x (32 input + 48 recurrent) weights and two bias sets
    # (2 x 4 x 48); layer 2 reads 48 inputs; the head reads 48 -> 64 plus 64 biases.
    lstm = 4 * 48 * (32 + 48) + 8 * 48 + 4 * 48 * (48 + 48) + 8 * 48
    head = 48 * 64 + 64
    untied = build_model(LSTMConfig(n_layers=2, d_model=32, d_hidden=48), V)
    assert untied.flops_per_token(T) == 6 * (lstm + head)
    # Tied: a 48 -> 32 projection (no bias) feeds the 32 -> 64 head that shares the embedding.
    tied = build_model(LSTMConfig(n_layers=2, d_model=32, d_hidden=48, tie_embeddings=True), V)
    assert tied.flops_per_token(T) == 6 * (lstm + 48 * 32 + 32 * 64 + 64)


@pytest.mark.parametrize("tied", [False, True])
def test_head_models_count_their_head_not_the_lm_head(tied):
    # A fine-tuning never runs the LM head: the span head's qa_outputs (32 -> 2 plus 2 biases)
    # runs per token instead, a classifier's head (32 -> 3 plus 3 biases) once per sequence.
    body = _gpt(tie_embeddings=tied)
    weights = L * (4 * 32 * 32 + 3 * 32 * 64 + 2 * 32) + 32  # the Llama layers + final norm
    attention = 12 * L * D * T
    assert body.flops_per_token(T, lm_head=False) == 6 * weights + attention
    assert SpanQAHead(body).flops_per_token(T) == 6 * (weights + 32 * 2 + 2) + attention
    classifier = SequenceClassifier(body, 3, "mean")
    assert classifier.flops_per_token(T) == 6 * weights + attention + 6 * (32 * 3 + 3) / T
    # The LSTM's LM head has a bias too (48 -> 64 plus 64): all of it goes.
    lstm = build_model(LSTMConfig(n_layers=2, d_model=32, d_hidden=48), V)
    recurrent = 4 * 48 * (32 + 48) + 8 * 48 + 4 * 48 * (48 + 48) + 8 * 48
    assert lstm.flops_per_token(T, lm_head=False) == 6 * recurrent
    assert SpanQAHead(lstm).flops_per_token(T) == 6 * (recurrent + 48 * 2 + 2)
