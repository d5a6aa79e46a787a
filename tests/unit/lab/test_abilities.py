"""Ability tasks and metrics: splits disjoint by construction, answers right, metrics by hand.

Tiny and fast: no training except one short run that checks the runner writes a run dir.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.lab.abilities.metrics import (
    answer_metrics,
    edit_distance,
    greedy_answers,
    in_context_score,
)
from lmforge.lab.abilities.runner import train_ability_point
from lmforge.lab.abilities.tasks import copy_starts, make_task, repeat_starts, segment_lengths
from lmforge.lab.inspect import attention_maps, logit_lens, prefix_matching_scores
from lmforge.models import build_model
from lmforge.models.config import GPTConfig


def _pairs(rows: torch.Tensor, cut: int) -> set[tuple]:
    return {tuple(r[:cut].tolist()) for r in rows}


def test_modular_every_pair_once_and_answers_right() -> None:
    data = make_task("modular", {"p": 11, "op": "-", "train_fraction": 0.3}, seed=3)
    train, test = _pairs(data.train, 3), _pairs(data.test, 3)
    assert not train & test and len(train | test) == 121 and len(train) == round(0.3 * 121)
    for row in torch.cat([data.train, data.test]).tolist():
        a, op, b, eq, c = row
        assert (op, eq) == (11, 12) and c == (a - b) % 11
    assert data.answer_start == 4 and data.train_answer_mask.sum(1).eq(1).all()
    other = make_task("modular", {"p": 11, "op": "-", "train_fraction": 0.3}, seed=4)
    assert _pairs(other.train, 3) != train  # the seed picks the split


@pytest.mark.parametrize("reverse", [False, True])
def test_addition_disjoint_and_correct(reverse: bool) -> None:
    params = {"digits": 2, "reverse": reverse, "train_examples": 3000, "test_examples": 500}
    data = make_task("addition", params, seed=0)
    assert data.train.shape == (3000, 9) and data.test.shape == (500, 9)
    assert not _pairs(data.train, 5) & _pairs(data.test, 5)
    for row in data.test.tolist()[:100]:
        a, b = row[0] * 10 + row[1], row[3] * 10 + row[4]
        answer = row[6:] if not reverse else row[6:][::-1]
        assert row[2] == 10 and row[5] == 11
        assert int("".join(map(str, answer))) == a + b
    # A bigger training set keeps the same test set: the split is a property of the pair.
    bigger = make_task("addition", {**params, "train_examples": 5000}, seed=0)
    assert _pairs(bigger.test, 5) == _pairs(data.test, 5)
    assert not _pairs(bigger.train, 5) & _pairs(data.test, 5)


def test_induction_layout_and_split() -> None:
    params = {"vocab": 20, "seq_len": 48, "min_repeat": 3, "max_repeat": 8, "max_gap": 10,
              "min_prefix": 12, "train_examples": 300, "test_examples": 40}  # fmt: skip
    data = make_task("induction", params, seed=1)
    assert data.vocab == [f"t{i}" for i in range(20)] and data.test.shape == (40, 48)
    assert data.train_early_mask is not None and data.test_early_mask is not None
    early, answer = data.test_early_mask, data.test_answer_mask
    lengths, copies, starts = segment_lengths(answer), copy_starts(early), repeat_starts(answer)
    gaps, firsts = set(), set()
    for row, e, a, L, C, R in zip(data.test.tolist(), early, answer, lengths.tolist(),
                                  copies.tolist(), starts.tolist(), strict=True):  # fmt: skip
        assert 3 <= L <= 8 and 12 <= C and C + L <= R <= C + L + 10 and R + L <= 48
        assert row[R : R + L] == row[C : C + L]
        # Both masks cover their copy's targets after its first token, nothing else.
        assert e.nonzero().flatten().tolist() == list(range(C, C + L - 1))
        assert a.nonzero().flatten().tolist() == list(range(R, R + L - 1))
        gaps.add(R - C - L)
        firsts.add(C)
    assert len(gaps) > 3 and len(firsts) > 3  # neither the distance nor the place is fixed
    assert data.train_loss_mask.all() and data.test_loss_mask.all()  # every next token trains
    # Uniform random tokens elsewhere: every token used, none much more often than the others.
    counts = torch.bincount(data.train.flatten(), minlength=20).float()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()

    def segments(rows, masks):
        return {tuple(r[copy_starts(m[None])[0] :][: int(m.sum()) + 1].tolist())
                for r, m in zip(rows, masks, strict=True)}  # fmt: skip

    assert not segments(data.train, data.train_early_mask) & segments(data.test, early)
    with pytest.raises(ConfigError, match="min_prefix \\+ 2 \\* max_repeat"):
        make_task("induction", {**params, "min_prefix": 23}, seed=1)
    with pytest.raises(ConfigError, match="does not take"):
        make_task("induction", {"digits": 3}, seed=1)


def test_edit_distance() -> None:
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 2, 3], [1, 3]) == 1
    assert edit_distance([], [4, 5]) == 2
    assert edit_distance([1, 2, 3, 4], [2, 1, 3, 5]) == 3


def test_answer_metrics_by_hand() -> None:
    # Two examples, answers of 2 tokens, vocab 3. Example 0 all right, example 1 half right.
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]])
    targets = torch.tensor([[0, 1], [0, 1]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    m = answer_metrics(probs.log(), targets, mask)
    assert m["exact_match"] == 0.5 and m["token_accuracy"] == 0.75
    assert m["predicted_exact_match"] == pytest.approx(0.75**2)
    nll = -(math.log(0.7) + math.log(0.8) + math.log(0.6) + math.log(0.2)) / 2
    assert m["neg_log_p"] == pytest.approx(nll, rel=1e-6)
    brier = [0.3**2 + 0.2**2 + 0.1**2, 0.1**2 + 0.2**2 + 0.1**2,
             0.4**2 + 0.3**2 + 0.1**2, 0.2**2 + 0.8**2 + 0.6**2]  # fmt: skip
    assert m["brier"] == pytest.approx(sum(brier) / 4, rel=1e-6)
    assert m["edit_distance"] == 0.5  # one substitution in example 1


def test_teacher_forced_exact_match_is_greedy_decoding() -> None:
    torch.manual_seed(0)
    data = make_task("addition", {"digits": 1, "train_examples": 60, "test_examples": 20}, 0)
    model = build_model(GPTConfig(n_layers=1, d_model=16, n_heads=2, max_seq_len=8), 14).eval()
    with torch.no_grad():
        logits = model(data.train[:, :-1])
    decoded = greedy_answers(model, data.train, data.answer_start)
    m = answer_metrics(logits, data.train[:, 1:], data.train_answer_mask, decoded)
    greedy_exact = sum(d == r[4:].tolist() for d, r in zip(decoded, data.train, strict=True))
    assert m["exact_match"] == greedy_exact / 60


def test_in_context_score_and_prefix_matching_on_a_built_copier() -> None:
    params = {"vocab": 16, "seq_len": 32, "min_repeat": 4, "max_repeat": 6, "max_gap": 8,
              "min_prefix": 8, "train_examples": 8, "test_examples": 8}  # fmt: skip
    data = make_task("induction", params, seed=0)
    rows, answer, early = data.test, data.test_answer_mask, data.test_early_mask
    assert early is not None
    targets = rows[:, 1:]
    V = len(data.vocab)
    # A perfect induction predictor on the repeat, uniform elsewhere.
    logits = torch.zeros(rows.size(0), rows.size(1) - 1, V)
    logits[answer] = 50 * torch.nn.functional.one_hot(targets[answer], V).float()
    score = in_context_score(logits, targets, answer, early)
    assert score["early_loss"] == pytest.approx(math.log(V), rel=1e-5)
    assert score["late_loss"] < 1e-6 and score["icl_score"] == pytest.approx(math.log(V), 1e-4)
    # Prefix matching of a real (untrained) GPT is a probability: in [0, 1], one per head.
    model = build_model(GPTConfig(n_layers=2, d_model=16, n_heads=2, max_seq_len=32,
                                  mlp="none"), V)  # fmt: skip
    layout = segment_lengths(answer), copy_starts(early), repeat_starts(answer)
    scores = prefix_matching_scores(model, rows, *layout)
    assert len(scores) == 2 and all(len(h) == 2 and all(0 <= s <= 1 for s in h) for h in scores)
    # ... and equals the attention read directly off the maps for one row: from each repeat
    # token to the token after its first occurrence.
    L, C, R = (int(x[0]) for x in layout)
    assert rows[0, R : R + L].tolist() == rows[0, C : C + L].tolist()
    maps = attention_maps(model, rows[0])
    direct = sum(float(maps[1][0, R + k, C + k + 1]) for k in range(L - 1)) / (L - 1)
    single = prefix_matching_scores(model, rows[:1], *(x[:1] for x in layout))
    assert single[1][0] == pytest.approx(direct, rel=1e-5)


def test_logit_lens_last_layer_is_the_model_output() -> None:
    torch.manual_seed(0)
    model = build_model(GPTConfig(n_layers=2, d_model=16, n_heads=2, max_seq_len=8), 12).eval()
    tokens = torch.randint(0, 12, (6,))
    lens = logit_lens(model, tokens, top_k=2)
    assert [x["layer"] for x in lens] == ["embeddings", "block 0", "block 1"]
    with torch.no_grad():
        probs = model(tokens.unsqueeze(0))[0].softmax(-1)
    top = probs.topk(2, dim=-1)
    assert lens[-1]["ids"] == top.indices.tolist()
    assert torch.allclose(torch.tensor(lens[-1]["probs"]), top.values)


def test_runner_writes_a_run_dir_with_history(tmp_path: Path) -> None:
    job = {"task": "addition", "params": {"digits": 1, "train_examples": 60,
           "test_examples": 20}, "examples": None, "seed": 0,
           "model": {"kind": "gpt", "n_layers": 1, "d_model": 16, "n_heads": 2, "max_seq_len": 5},
           "steps": 6, "batch_size": 0, "lr": 1e-3, "weight_decay": 1.0, "beta2": 0.98,
           "warmup_steps": 2, "eval_every": 3, "eval_examples": 20, "threads": 1,
           "out": str(tmp_path / "runs" / "p")}  # fmt: skip
    result = train_ability_point(job)
    assert result["finished"] and result["tokens"] == 6 * 60 * 5
    history = [json.loads(x) for x in (tmp_path / "runs/p/history.jsonl").open()]
    assert [r["step"] for r in history] == [3, 6]
    assert set(history[-1]["test"]) >= {"exact_match", "token_accuracy", "edit_distance",
                                        "neg_log_p", "brier", "predicted_exact_match"}  # fmt: skip
    from lmforge.run.rundir import load_run

    run = load_run(tmp_path / "runs/p")
    assert run.tokenizer.encode("3+4=") == [3, 10, 4, 11]
    assert json.loads((tmp_path / "runs/p/ability.json").read_text())["metrics"]["step"] == 6
