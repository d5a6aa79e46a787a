"""LoRA's quality floor: from a GPT pretrained 500 steps on text covering copy_reverse's characters
(strings followed by their copy or reverse, no task prompts), LoRA SFT (all-linear, rank 16) in
twice full fine-tuning's steps reaches the same >= 95% exact match on the disjoint test split."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.finetune import finetune
from lmforge.finetune.config import FinetuneConfig
from lmforge.run.config import TrainConfig
from lmforge.train import run as train
from lmforge.verb import Flags

FULL_STEPS = 500  # full fine-tuning's budget; LoRA gets twice as many steps


def _corpus(path: Path) -> Path:
    """Lines of random strings over the task's alphabet, each followed by its copy or reverse,
    and the operation words: the characters and the skills, never the task's prompt format."""
    rng = random.Random(0)
    lines = []
    for _ in range(3000):
        parts = []
        for _ in range(3):
            w = "".join(rng.choice("abcdef") for _ in range(rng.randint(1, 5)))
            parts.append(w + " " + (w if rng.random() < 0.5 else w[::-1]))
        lines.append(" ".join(parts) + " " + rng.choice(["copy", "reverse"]) + "=")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrain")
    corpus = _corpus(root / "corpus.txt")
    data = prepare(
        PrepareConfig(source=str(corpus), out=str(root / "data"), tokenizer={"kind": "char"})
    ).out
    cfg = TrainConfig.model_validate(
        {
            "data": str(data),
            "out": str(root / "base"),
            "model": {"kind": "gpt", "n_layers": 2, "n_heads": 4, "d_model": 64, "max_seq_len": 32},
            "train": {
                "batch_size": 32,
                "seq_len": 32,
                "max_steps": 500,
                "threads": 1,
                "peak_tflops": 0.1,
                "tensorboard": False,
            },
            "optim": {"lr": 3e-3},
            "schedule": {"warmup_steps": 20},
            "eval": {"every": 500, "batches": 2},
            "sample": {"every": 0},
        }
    )
    assert train(cfg) == 0
    return root / "base"


def _finetune(base: Path, out: Path, steps: int, lr: float, lora: dict) -> float:
    cfg = FinetuneConfig(
        init=str(base), out=str(out), task="copy_reverse", device="cpu", threads=1, lora=lora,
        sft={"lr": lr, "batch_size": 64, "max_steps": steps, "eval_every": steps,
             "eval_batches": 2},
        decode={"beam_size": 1, "batch_size": 100},
    )  # fmt: skip
    assert finetune(cfg, Flags()) == 0
    report = json.loads((out / "eval" / "copy_reverse.json").read_text())
    assert report["examples"] == 200
    return report["exact_match_greedy"]


@pytest.mark.slow
def test_lora_matches_full_finetuning_within_twice_the_steps(base, tmp_path):
    torch.set_num_threads(1)
    full = _finetune(base, tmp_path / "full", FULL_STEPS, 3e-3, {})
    lora = _finetune(
        base, tmp_path / "lora", 2 * FULL_STEPS, 5e-3, {"rank": 16, "targets": "all-linear"}
    )
    assert full >= 95.0, full
    assert lora >= 95.0, lora
