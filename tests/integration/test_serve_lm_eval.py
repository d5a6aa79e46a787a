"""lm-evaluation-harness' `local-completions` model pointed at `lmforge serve` scores a local
multiple-choice task exactly as lmforge's own likelihood scoring does (per-choice log-likelihoods
within 1e-5, equal acc and acc_norm). It tokenizes through the server's /tokenizer_info,
/tokenize and /detokenize (its remote tokenizer backend) and sends echo + logprobs requests.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from _serve_support import Server
from lmforge_testing import require, write_lm_eval_task

from lmforge.data.tokenizer import EOT, build_byte
from lmforge.eval.likelihood import pick, score_choices
from lmforge.models import GPTConfig, build_model
from lmforge.run.rundir import create_run_dir

ITEMS = [
    ("The capital of France is", ["Paris", "London", "a small town by the sea"]),
    ("Two plus two equals", ["four", "five", "twenty-two"]),
    ("The sky on a clear day is", ["blue", "green", "covered in polka dots"]),
    ("A cat says", ["meow", "woof", "moo", "nothing at all, being a cat"]),
    ("Bees make", ["honey", "milk", "furniture"]),
]


@pytest.mark.slow
def test_local_completions_against_the_server_equals_lmforge_scoring(tmp_path, monkeypatch):
    for module in ("lm_eval", "openai"):
        require(importlib.util.find_spec(module) is not None, f"{module} not installed")
    torch.manual_seed(0)
    tokenizer = build_byte([EOT])
    cfg = GPTConfig(n_layers=2, n_heads=4, d_model=32, max_seq_len=64, init_std=0.2)
    model = build_model(cfg, tokenizer.vocab_size).eval()
    create_run_dir(tmp_path / "run", model, cfg, tokenizer)
    tasks = write_lm_eval_task(tmp_path, "lmforge_serve_mc", ITEMS, monkeypatch)

    import lm_eval
    from lm_eval.tasks import TaskManager

    server = Server(tmp_path / "run", "model_name=tiny")
    try:
        args = f"model=tiny,base_url={server.url}/v1/completions,tokenizer_backend=remote"
        results = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=args + ",num_concurrent=4,max_retries=1",
            tasks=["lmforge_serve_mc"],
            task_manager=TaskManager(include_path=str(tasks)),
            num_fewshot=0,
            log_samples=True,
        )
    finally:
        assert server.stop() == 0
    theirs = results["results"]["lmforge_serve_mc"]
    acc, acc_norm, per_item = [], [], {}
    for sample in results["samples"]["lmforge_serve_mc"]:
        lls = [float(r[0]) for r in sample["filtered_resps"]]
        per_item[sample["doc"]["question"]] = (lls, sample["acc"], sample["acc_norm"])
    for question, choices in ITEMS:
        scores = score_choices(model, tokenizer, question, [" " + c for c in choices])
        lls = [s.loglik for s in scores]
        their_lls, their_acc, their_acc_norm = per_item[question]
        assert lls == pytest.approx(their_lls, abs=1e-5), question
        acc.append(float(pick(lls) == 0))
        acc_norm.append(float(pick(lls, [len(c) for c in choices]) == 0))
        assert (acc[-1], acc_norm[-1]) == (their_acc, their_acc_norm), question
    assert math.isclose(theirs["acc,none"], sum(acc) / len(acc))
    assert math.isclose(theirs["acc_norm,none"], sum(acc_norm) / len(acc_norm))
