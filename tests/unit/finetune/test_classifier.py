"""The classification head and its training through the Trainer: pooling, padding invariance,
the batch source, the config the `classifier.*` keys make, learning (GPT and LSTM), head-only
mode, and a time budget honoured within one step."""

from __future__ import annotations

import json
import random

import pytest
import torch

from lmforge.errors import CheckpointError
from lmforge.eval.metrics import accuracy
from lmforge.finetune.classifier import (
    ClassifierBatches,
    ClassifierObjective,
    classifier_optimizer,
    classifier_train_config,
    fit_classifier,
)
from lmforge.finetune.config import FinetuneConfig
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.models.heads import SequenceClassifier, load_head, pad_batch, predict, save_head
from lmforge.run.config import TrainConfig
from lmforge.train.interface import BatchSource, Objective

VOCAB = 16
CONFIGS = {
    "gpt": GPTConfig(n_layers=2, n_heads=2, d_model=32, max_seq_len=16),
    "lstm": LSTMConfig(n_layers=2, d_model=32, d_hidden=32),
}


def _body(kind: str):
    torch.manual_seed(0)
    return build_model(CONFIGS[kind], VOCAB)


def _config(kind: str, n_train: int, n_dev: int, **classifier) -> TrainConfig:
    """The fine-tuning's TrainConfig, quiet: a fixed peak (no measurement), no TensorBoard."""
    cfg = FinetuneConfig(device="cpu", seed=0, classifier=classifier)
    config = classifier_train_config(cfg, CONFIGS[kind], n_train, n_dev)
    train = config.train.model_copy(update={"peak_tflops": 0.1, "tensorboard": False})
    return config.model_copy(update={"train": train})


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
@pytest.mark.parametrize("pooling", ["mean", "max", "last"])
@torch.no_grad()
def test_pooling_reads_only_real_tokens(kind, pooling):
    model = SequenceClassifier(_body(kind), 3, pooling).eval()
    seqs = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    tokens, lengths = pad_batch(seqs)
    batched = model(tokens, lengths)
    for row, seq in enumerate(seqs):
        hidden = model.body.hidden_states(torch.tensor([seq]))[0]  # (T, d)
        vecs = {"mean": hidden.mean(0), "max": hidden.amax(0), "last": hidden[-1]}
        vec = vecs[pooling]
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


def test_batches_are_seeded_resumable_and_cover_each_epoch():
    ids = [[i] * (1 + i % 5) for i in range(10)]
    source = ClassifierBatches((ids, [i % 2 for i in range(10)]), 4, seed=3, shuffle=True)
    assert isinstance(source, BatchSource) and isinstance(ClassifierObjective(), Objective)
    assert source.steps_per_epoch == 3 and source.rows == 4 and source.seq_len == 5
    epoch = [source.next_batches()[0] for _ in range(3)]
    assert [len(b.labels) for b in epoch] == [4, 4, 2]  # the last batch of an epoch is short
    firsts = sum((b.tokens[:, 0].tolist() for b in epoch), [])
    assert sorted(firsts) == list(range(10))
    assert all(b.labels.tolist() == [i % 2 for i in b.tokens[:, 0].tolist()] for b in epoch)
    assert all(b.lengths.tolist() == [1 + i % 5 for i in b.tokens[:, 0].tolist()] for b in epoch)
    second = [source.next_batches()[0].tokens[:, 0].tolist() for _ in range(3)]
    assert sum(second, []) != firsts and sorted(sum(second, [])) == list(range(10))
    again = ClassifierBatches((ids, [0] * 10), 4, seed=3, shuffle=True)
    again.load_state_dict(json.loads(json.dumps({**source.state_dict(), "step": 4})))
    assert again.next_batches()[0].tokens[:, 0].tolist() == second[1]
    other = ClassifierBatches((ids[:9], [0] * 9), 4, seed=3, shuffle=True)
    with pytest.raises(CheckpointError, match="trained on 10 examples, these are 9"):
        other.load_state_dict(source.state_dict())
    fixed = ClassifierBatches((ids, [0] * 10), 4, seed=3, shuffle=False)
    lengths = [int(n) for _ in range(3) for n in fixed.next_batches()[0].lengths]
    assert lengths == sorted(lengths)  # validation batches by length: little padding


def test_classifier_keys_make_the_train_config():
    cfg = FinetuneConfig(
        classifier={
            "lr": 2e-3,
            "head_lr": 5e-3,
            "weight_decay": 0.05,
            "epochs": 3,
            "batch_size": 8,
            "warmup_frac": 0.25,
            "evals_per_epoch": 2,
            "patience": 3,
            "max_time": 60,
        }
    )
    config = classifier_train_config(cfg, CONFIGS["gpt"], n_train=100, n_dev=50)
    assert config.max_steps == 3 * 13 and config.train.max_time == 60
    assert config.train.batch_size == 8 and config.eval.every == 6 and config.eval.patience == 3
    assert config.eval.batches == 4  # 50 dev examples in batches of 16
    assert config.schedule.warmup_steps == int(0.25 * 39) and config.schedule.kind == "wsd"
    assert config.optim.lr == 2e-3 and config.optim.weight_decay == 0.05
    model = SequenceClassifier(_body("gpt"), 2, "mean")
    opt = classifier_optimizer(model, config.optim, cfg.classifier.head_lr, torch.device("cpu"))
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["head_decay"]["initial_lr"] == 5e-3 == by_name["head_no_decay"]["lr"]
    assert by_name["body_decay"]["initial_lr"] == 2e-3
    assert by_name["body_decay"]["weight_decay"] == 0.05 and by_name["head_no_decay"][
        "weight_decay"
    ] == pytest.approx(0.0)
    every = {id(p) for g in opt.param_groups for p in g["params"]}
    assert every == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_fine_tuning_learns_a_toy_task(kind, tmp_path):
    train, dev = _toy_task(384, 1), _toy_task(128, 2)
    model = SequenceClassifier(_body(kind), 2, "mean", dropout=0.0)
    config = _config(kind, 384, 128, lr=1e-2, epochs=8, batch_size=32, patience=8, warmup_frac=0)
    result = fit_classifier(model, train, dev, config, tmp_path)
    assert result.code == 0 and result.stopped in ("epochs", "patience")
    assert result.best_dev_acc >= 0.9
    assert accuracy(dev[1], predict(model, dev[0])) == result.best_dev_acc  # best weights kept
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    dev_rows = [r for r in rows if "dev_acc" in r]
    assert max(r["dev_acc"] for r in dev_rows) == result.best_dev_acc
    assert [r["step"] for r in dev_rows if r["dev_acc"] == result.best_dev_acc][0] == (
        result.best_step
    )
    assert any("loss" in r and "lr" in r for r in rows)


def test_head_only_mode_trains_and_keeps_only_the_head(tmp_path):
    body = _body("gpt")
    before = {k: v.clone() for k, v in body.state_dict().items()}
    model = SequenceClassifier(body, 2, "last")
    head_before = model.head.weight.clone()
    train, dev = _toy_task(64, 1), _toy_task(32, 2)
    config = _config("gpt", 64, 32, mode="head", lr=1e-2, epochs=2, batch_size=16)
    result = fit_classifier(model, train, dev, config, tmp_path / "work", head_only=True)
    assert result.code == 0 and result.steps == 8
    assert all(torch.equal(before[k], v) for k, v in body.state_dict().items())  # bit-identical
    assert not torch.equal(head_before, model.head.weight)
    assert all(p.requires_grad for p in body.parameters())  # unfrozen again afterwards
    # The optimizer holds state for the head's weight and bias only.
    ckpt = tmp_path / "work" / "checkpoints" / "step_000008" / "optimizer.pt"
    saved = torch.load(ckpt, weights_only=True)
    assert sum(len(g["params"]) for g in saved["param_groups"]) == 2
    assert len(saved["state"]) == 2
    shapes = sorted(tuple(s["exp_avg"].shape) for s in saved["state"].values())
    assert shapes == sorted([tuple(model.head.weight.shape), tuple(model.head.bias.shape)])

    save_head(model, tmp_path / "head", {"task": "toy", "labels": ["0", "1"]})
    loaded, meta = load_head(body, tmp_path / "head")
    assert meta["pooling"] == "last" and meta["labels"] == ["0", "1"]
    assert predict(loaded, dev[0]) == predict(model, dev[0])


def test_max_time_is_honoured_within_one_step(tmp_path):
    """One dev evaluation per epoch of 10,000 steps: a budget checked only at evaluations (as the
    old loop did) would run far past it; the Trainer stops at the first step past it."""
    train, dev = _toy_task(40_000, 1), _toy_task(16, 2)
    config = _config("gpt", 40_000, 16, batch_size=4, evals_per_epoch=1, max_time=0.5)
    config = config.model_copy(update={"train": config.train.model_copy(update={"log_every": 1})})
    model = SequenceClassifier(_body("gpt"), 2, "mean")
    result = fit_classifier(model, train, dev, config, tmp_path)
    assert result.code == 0 and result.stopped == "time" and 0 < result.steps < 10_000
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    elapsed = [r["elapsed_s"] for r in rows if "loss" in r]
    assert len(elapsed) == result.steps
    # Stopped at the first step past the budget (logged times are rounded to 1 ms, so the step
    # before may read exactly 0.5).
    assert elapsed[-1] >= 0.5 >= elapsed[-2]


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
@torch.no_grad()
def test_hidden_states_are_what_the_lm_head_reads(kind):
    body = _body(kind).eval()
    tokens = torch.randint(0, VOCAB, (2, 7))
    assert torch.allclose(body(tokens), body.lm_head(body.hidden_states(tokens)).float())


def test_classifier_answers_what_the_trainer_reads():
    body = _body("gpt")
    model = SequenceClassifier(body, 3, "mean")
    assert model.config == body.config and model.max_context == 16
    assert model.vocab_size == VOCAB
    assert model.flops_per_token(16) < body.flops_per_token(16)  # no LM head (test_flops.py)
    assert model.num_params() == body.num_params() + 32 * 3 + 3
