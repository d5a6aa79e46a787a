"""Fine-tuning through the Trainer: an interrupted classifier or SFT fine-tuning continued with
--resume equals an uninterrupted one (weights and metrics rows), the partial dir's rules, and the
published classifier run scored by `lmforge eval`."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.data.tokenizer import EOT, build_char
from lmforge.errors import ConfigError
from lmforge.finetune import finetune
from lmforge.finetune.config import FinetuneConfig
from lmforge.models import GPTConfig, build_model
from lmforge.run.rundir import create_run_dir
from lmforge.train.trainer import Trainer
from lmforge.verb import Flags

TEXT = "abcdefghijklmnopqrstuvwxyz .,:!?\n0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ'-=>"
TIMING = {"tokens_per_s", "mfu", "elapsed_s"}  # differ from run to run; everything else may not


@pytest.fixture(scope="module")
def init(tmp_path_factory) -> Path:
    """A tiny GPT run dir (random weights, dropout on so the resumed RNG matters)."""
    torch.manual_seed(0)
    tokenizer = build_char([TEXT], [EOT])
    cfg = GPTConfig(n_layers=1, n_heads=2, d_model=32, max_seq_len=64, dropout=0.1)
    model = build_model(cfg, tokenizer.vocab_size)
    return create_run_dir(tmp_path_factory.mktemp("init") / "gpt", model, cfg, tokenizer)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("task")
    rng = random.Random(0)
    for split, n in (("train", 48), ("dev", 16), ("test", 16)):
        lines = []
        for _ in range(n):
            label = rng.random() < 0.5
            word = rng.choice(["good", "great"] if label else ["bad", "awful"])
            lines.append(f"{'pos' if label else 'neg'} the film was {word}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    rows = [{"prompt": f"{a}+{b}=", "response": str(a + b)} for a in range(9) for b in range(5)]
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def interrupt_at(monkeypatch, step: int) -> None:
    """Deliver a real SIGINT to this process right after optimizer step `step`."""
    original = Trainer._after_step

    def after_step(self, stats):
        original(self, stats)
        if self.state.step == step:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_after_step", after_step)


def rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def latest_weights(run_dir: Path) -> bytes:
    name = (run_dir / "checkpoints" / "latest").read_text().strip()
    return (run_dir / "checkpoints" / name / "model.safetensors").read_bytes()


def classifier_config(init: Path, task_dir: Path, out: Path) -> FinetuneConfig:
    task = {"name": "classification", "dir": str(task_dir)}
    classifier = {"epochs": 3, "batch_size": 8, "lr": 1e-2, "patience": 10}
    return FinetuneConfig(
        init=str(init), out=str(out), task=task, device="cpu", threads=1, classifier=classifier
    )


def test_classifier_resume_equals_uninterrupted(init, task_dir, tmp_path, monkeypatch, caplog):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert finetune(classifier_config(init, task_dir, full), Flags()) == 0
    assert not (tmp_path / ".full.partial").exists()  # published, partial dir gone

    interrupt_at(monkeypatch, 7)  # 6 steps an epoch, dev evaluations every 3
    with caplog.at_level(logging.WARNING):
        assert finetune(classifier_config(init, task_dir, cut), Flags()) == 130
    monkeypatch.undo()
    partial = tmp_path / ".cut.partial"
    assert not cut.exists() and (partial / "checkpoints" / "step_000007").is_dir()
    assert "--resume" in caplog.text and str(partial) in caplog.text
    with pytest.raises(ConfigError, match="pass --resume to continue it or --overwrite"):
        finetune(classifier_config(init, task_dir, cut), Flags())

    assert finetune(classifier_config(init, task_dir, cut), Flags(resume=True)) == 0
    assert not partial.exists()
    assert rows(cut) == rows(full)  # every loss and dev row, bit for bit
    assert max(r["step"] for r in rows(cut)) == 18
    head = Path("classifier") / "head.safetensors"
    assert (cut / head).read_bytes() == (full / head).read_bytes()
    assert latest_weights(cut) == latest_weights(full)  # the fine-tuned body
    report = json.loads((cut / "eval" / "classification.json").read_text())
    expected = json.loads((full / "eval" / "classification.json").read_text())
    for key in ("acc", "macro_f1", "dev_acc", "steps", "best_step", "epochs", "stopped"):
        assert report[key] == expected[key], key
    assert report["steps"] == 18 and report["stopped"] == "epochs"
    assert (cut / "plots" / "loss.png").is_file()
    with pytest.raises(ConfigError, match="is finished; nothing to resume"):
        finetune(classifier_config(init, task_dir, cut), Flags(resume=True))


def test_published_classifier_evaluates_with_its_head(init, task_dir, tmp_path, capsys):
    out = tmp_path / "cls"
    cfg = classifier_config(init, task_dir, out)
    cfg = cfg.model_copy(update={"classifier": cfg.classifier.model_copy(update={"epochs": 1})})
    assert finetune(cfg, Flags()) == 0
    report = json.loads((out / "eval" / "classification.json").read_text())
    assert report["stopped"] == "epochs" and report["steps"] == 6 and report["n"] == 16
    capsys.readouterr()
    task = ["task=classification", f"task.dir={task_dir}"]
    assert main(["eval", str(out), *task]) == 0
    printed = capsys.readouterr().out
    assert "| method | finetuned |" in printed and f"| acc | {report['acc']:.4f} |" in printed


def sft_config(init: Path, task_dir: Path, out: Path) -> FinetuneConfig:
    task = {"name": "sft_jsonl", "train": str(task_dir / "sft.jsonl")}
    sft = {"max_steps": 8, "batch_size": 4, "eval_every": 3, "eval_batches": 1, "evaluate": False}
    return FinetuneConfig(init=str(init), out=str(out), task=task, device="cpu", sft=sft)


def test_sft_resume_equals_uninterrupted(init, task_dir, tmp_path, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert finetune(sft_config(init, task_dir, full), Flags()) == 0
    interrupt_at(monkeypatch, 5)
    assert finetune(sft_config(init, task_dir, cut), Flags()) == 130
    monkeypatch.undo()
    assert (tmp_path / ".cut.partial" / "checkpoints" / "step_000005").is_dir()
    assert finetune(sft_config(init, task_dir, cut), Flags(resume=True)) == 0
    assert rows(cut) == rows(full)
    assert latest_weights(cut) == latest_weights(full)
    assert not (tmp_path / ".cut.partial").exists()
