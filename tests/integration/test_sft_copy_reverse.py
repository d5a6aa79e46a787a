"""Proof that SFT and decoding work: a tiny GPT and a tiny LSTM, fine-tuned from random init on the
synthetic copy/reverse task, reach >= 95% exact match with greedy decoding and with beam search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.data.tokenizer import build_char
from lmforge.eval.config import EvalConfig
from lmforge.eval.run import evaluate
from lmforge.eval.tasks.copy_reverse import TASK
from lmforge.finetune import finetune
from lmforge.finetune.config import FinetuneConfig
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.run.rundir import create_run_dir, load_run
from lmforge.verb import Flags

# Sizes chosen to pass with a margin in well under a minute on one CPU thread.
SETTINGS = {
    "gpt": (GPTConfig(n_layers=2, n_heads=4, d_model=64, max_seq_len=32), 800, 3e-3),
    "lstm": (LSTMConfig(n_layers=1, d_model=32, d_hidden=256), 800, 5e-3),
}


def _random_init_run(path: Path, kind: str) -> Path:
    torch.manual_seed(0)
    tokenizer = build_char(TASK.texts(), ["<|endoftext|>"])
    cfg = SETTINGS[kind][0]
    return create_run_dir(path, build_model(cfg, tokenizer.vocab_size), cfg, tokenizer)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_copy_reverse_reaches_95_percent(tmp_path: Path, kind: str) -> None:
    init = _random_init_run(tmp_path / "init", kind)
    out = tmp_path / "sft"
    _, steps, lr = SETTINGS[kind]
    cfg = FinetuneConfig(
        init=str(init),
        out=str(out),
        task="copy_reverse",
        device="cpu",
        sft={"lr": lr, "batch_size": 64, "max_steps": steps, "eval_every": 400, "eval_batches": 2},
        decode={"beam_size": 3, "batch_size": 100},
    )
    assert finetune(cfg, Flags()) == 0
    report = json.loads((out / "eval" / "copy_reverse.json").read_text())
    assert report["examples"] == 200
    assert report["exact_match_greedy"] >= 95.0, report
    assert report["exact_match_beam"] >= 95.0, report
    # The SFT run is an ordinary run dir: the trainer's checkpoints, metrics and config.
    run = load_run(out, "best")
    assert run.config.init.from_ == str(init) and run.step > 0
    assert (out / "metrics.jsonl").is_file() and (out / "finetune.toml").is_file()
    predictions = (out / "eval" / "copy_reverse.predictions.jsonl").read_text().splitlines()
    row = json.loads(predictions[0])
    assert set(row) >= {"id", "prompt", "references", "greedy", "beam"}
    if kind == "gpt":  # `lmforge eval` scores the run the same way
        again = evaluate(
            EvalConfig(
                runs=[str(out)], task="copy_reverse", checkpoint="best", decode={"beam_size": 1}
            )
        )[str(out)]
        assert again["exact_match_greedy"] == report["exact_match_greedy"]
