"""lm-evaluation-harness scores an exported model exactly as lmforge's own multiple-choice scoring.

A tiny random model is exported, a local task (YAML + JSONL, no hub) is run through
`lm_eval.simple_evaluate(model="hf")`, and its per-choice log-likelihoods, `acc` and `acc_norm`
are compared with `lmforge.eval.likelihood.score_choices` on the same items.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from lmforge_testing import require, write_lm_eval_task

from lmforge.data.tokenizer import EOT, build_byte
from lmforge.eval.likelihood import pick, score_choices
from lmforge.interop.export import export_hf
from lmforge.models import GPTConfig, build_model
from lmforge.run.rundir import create_run_dir

ITEMS = [
    ("The capital of France is", ["Paris", "London", "a small town by the sea"]),
    ("Two plus two equals", ["four", "five", "twenty-two"]),
    ("The sky on a clear day is", ["blue", "green", "covered in polka dots"]),
    ("Water freezes at zero degrees", ["Celsius", "Fahrenheit"]),
    ("A cat says", ["meow", "woof", "moo", "nothing at all, being a cat"]),
    ("The opposite of hot is", ["cold", "warm"]),
    ("Shakespeare wrote", ["Hamlet", "Ulysses", "the Python documentation"]),
    ("Bees make", ["honey", "milk", "furniture"]),
]


@pytest.mark.slow
def test_lm_eval_on_exported_model_equals_lmforge_scoring(tmp_path, monkeypatch):
    for module in ("lm_eval", "transformers"):
        require(importlib.util.find_spec(module) is not None, f"{module} not installed")
    torch.manual_seed(0)
    tokenizer = build_byte([EOT])
    cfg = GPTConfig(n_layers=2, n_heads=4, d_model=32, max_seq_len=64, init_std=0.2)
    model = build_model(cfg, tokenizer.vocab_size).eval()
    create_run_dir(tmp_path / "run", model, cfg, tokenizer)
    out = export_hf(tmp_path / "run", tmp_path / "hf")

    tasks = write_lm_eval_task(tmp_path, "lmforge_tiny_mc", ITEMS, monkeypatch)

    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={out},dtype=float32,device=cpu",
        tasks=["lmforge_tiny_mc"],
        task_manager=TaskManager(include_path=str(tasks)),
        num_fewshot=0,
        batch_size=4,
        log_samples=True,
    )
    theirs = results["results"]["lmforge_tiny_mc"]

    acc, acc_norm, per_item = [], [], {}
    for sample in results["samples"]["lmforge_tiny_mc"]:
        lls = [float(r[0]) for r in sample["filtered_resps"]]
        per_item[sample["doc"]["question"]] = (lls, sample["acc"], sample["acc_norm"])
    for question, choices in ITEMS:
        # lm-eval scores " " + choice (its target delimiter) and normalises by len(choice).
        scores = score_choices(model, tokenizer, question, [" " + c for c in choices])
        lls = [s.loglik for s in scores]
        their_lls, their_acc, their_acc_norm = per_item[question]
        assert lls == pytest.approx(their_lls, abs=1e-4), question
        acc.append(float(pick(lls) == 0))
        acc_norm.append(float(pick(lls, [len(c) for c in choices]) == 0))
        assert (acc[-1], acc_norm[-1]) == (their_acc, their_acc_norm), question
    assert math.isclose(theirs["acc,none"], sum(acc) / len(acc))
    assert math.isclose(theirs["acc_norm,none"], sum(acc_norm) / len(acc_norm))
