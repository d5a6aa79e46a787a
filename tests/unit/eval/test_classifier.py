"""The classification head: pooling, padding invariance, training for GPT and LSTM, head-only."""

from __future__ import annotations

import random

import pytest
import torch

from lmforge.eval.metrics import accuracy
from lmforge.finetune.classifier import fit_classifier
from lmforge.finetune.config import ClassifierSection
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.models.heads import SequenceClassifier, load_head, pad_batch, predict, save_head

VOCAB = 16
CONFIGS = {
    "gpt": GPTConfig(n_layers=2, n_heads=2, d_model=32, max_seq_len=16),
    "lstm": LSTMConfig(n_layers=2, d_model=32, d_hidden=32),
}


def _body(kind: str):
    torch.manual_seed(0)
    return build_model(CONFIGS[kind], VOCAB)


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
@torch.no_grad()
def test_pooling_reads_only_real_tokens(kind, pooling):
    model = SequenceClassifier(_body(kind), 3, pooling).eval()
    seqs = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    tokens, lengths = pad_batch(seqs)
    batched = model(tokens, lengths)
    for row, seq in enumerate(seqs):
        hidden = model.body.hidden_states(torch.tensor([seq]))[0]  # (T, d)
        vec = hidden.mean(0) if pooling == "mean" else hidden[-1]
        assert torch.allclose(model.pool(tokens, lengths)[row], vec, atol=1e-5)
        alone = model(torch.tensor([seq]), torch.tensor([len(seq)]))[0]
        assert torch.allclose(batched[row], alone, atol=1e-5)


def _toy_task(n: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Label 1 iff token 3 occurs: needs the model to look at every position."""
    rng = random.Random(seed)
    ids, labels = [], []
    for _ in range(n):
        seq = [rng.randrange(4, VOCAB) for _ in range(rng.randrange(3, 12))]
        label = rng.random() < 0.5
        if label:
            seq[rng.randrange(len(seq))] = 3
        ids.append(seq)
        labels.append(int(label))
    return ids, labels


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_fine_tuning_learns_a_toy_task(kind):
    train, dev = _toy_task(384, 1), _toy_task(128, 2)
    model = SequenceClassifier(_body(kind), 2, "mean", dropout=0.0)
    cfg = ClassifierSection(lr=1e-2, epochs=8, batch_size=32, patience=8, warmup_frac=0.0)
    result = fit_classifier(model, train, dev, cfg, seed=0)
    assert result.best_dev_acc >= 0.9
    assert accuracy(dev[1], predict(model, dev[0])) == result.best_dev_acc  # best weights kept
    assert result.steps > 0 and result.history


def test_head_only_mode_leaves_the_body_alone(tmp_path):
    body = _body("gpt")
    before = {k: v.clone() for k, v in body.state_dict().items()}
    model = SequenceClassifier(body, 2, "last")
    head_before = model.head.weight.clone()
    train, dev = _toy_task(64, 1), _toy_task(32, 2)
    fit_classifier(model, train, dev, ClassifierSection(mode="head", lr=1e-2, epochs=2), seed=0)
    assert all(torch.equal(before[k], v) for k, v in body.state_dict().items())
    assert not torch.equal(head_before, model.head.weight)
    assert all(p.requires_grad for p in body.parameters())  # unfrozen again afterwards

    save_head(model, tmp_path, {"task": "toy", "labels": ["0", "1"]})
    loaded, meta = load_head(body, tmp_path)
    assert meta["pooling"] == "last" and meta["labels"] == ["0", "1"]
    assert predict(loaded, dev[0]) == predict(model, dev[0])


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
@torch.no_grad()
def test_hidden_states_are_what_the_lm_head_reads(kind):
    body = _body(kind).eval()
    tokens = torch.randint(0, VOCAB, (2, 7))
    assert torch.allclose(body(tokens), body.lm_head(body.hidden_states(tokens)).float())
