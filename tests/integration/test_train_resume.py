"""Interrupt + resume equals an uninterrupted run bit for bit (GPT and LSTM); fallbacks."""

from __future__ import annotations

import os
import signal

import pytest
from _train_support import TINY, TINY_LSTM, make_data_dir, read_rows, train_config, train_losses

from lmforge.train.trainer import Trainer, run
from lmforge.verb import Flags


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("resume"))


def interrupt_at(monkeypatch, step, sig=signal.SIGINT):
    """Deliver a real signal to this process right after optimizer step `step`."""
    original = Trainer._after_step

    def after_step(self, stats):
        original(self, stats)
        if self.state.step == step:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(Trainer, "_after_step", after_step)


@pytest.mark.parametrize("base", [TINY, TINY_LSTM], ids=["gpt", "lstm"])
def test_interrupted_and_resumed_equals_uninterrupted(data, tmp_path, monkeypatch, base):
    kw = {"checkpoint__every": 4, "model__dropout": 0.1}
    assert run(train_config(data, tmp_path / "full", base, **kw), Flags()) == 0
    interrupt_at(monkeypatch, 7)
    cut = tmp_path / "cut"
    assert run(train_config(data, cut, base, **kw), Flags()) == 130
    monkeypatch.undo()
    assert (cut / "checkpoints" / "step_000007" / "state.json").is_file()
    assert max(train_losses(cut)) == 7
    # The resume takes everything from the run dir; only `out` is given.
    assert run(train_config(data, cut, base, **kw), Flags(resume=True)) == 0
    assert train_losses(cut) == train_losses(tmp_path / "full")  # bit for bit
    steps = [r["step"] for r in read_rows(cut) if "loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # reads as one run


def test_corrupted_latest_is_skipped_and_rows_after_it_dropped(data, tmp_path, caplog, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run(train_config(data, full, checkpoint__every=4), Flags()) == 0
    interrupt_at(monkeypatch, 9, signal.SIGTERM)
    assert run(train_config(data, cut, checkpoint__every=4), Flags()) == 143
    monkeypatch.undo()
    assert max(train_losses(cut)) == 9
    weights = cut / "checkpoints" / "step_000008" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0x55
    weights.write_bytes(bytes(blob))
    (cut / "checkpoints" / "step_000009" / "state.json").write_text("{torn")
    assert run(train_config(data, cut), Flags(resume=True)) == 0
    assert "skipping checkpoint step_000009" in caplog.text
    assert "skipping checkpoint step_000008" in caplog.text
    assert train_losses(cut) == train_losses(full)


def test_resume_of_finished_run_says_so(data, tmp_path, capsys):
    cfg = train_config(data, tmp_path / "r", train__max_steps=3)
    assert run(cfg, Flags()) == 0
    capsys.readouterr()
    assert run(cfg, Flags(resume=True)) == 0
    assert "already finished at step 3" in capsys.readouterr().out
    # A larger budget continues it.
    longer = train_config(data, tmp_path / "r", train__max_steps=5)
    assert run(longer, Flags(resume=True)) == 0
    assert max(train_losses(tmp_path / "r")) == 5
