"""The run dir contract: load_run verifies what it loads, run_info records the command."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.data.tokenizer import EOT, build_char
from lmforge.errors import CheckpointError
from lmforge.models import GPTConfig, build_model
from lmforge.run import checkpoint as ckpt
from lmforge.run.rundir import CHECKPOINTS_DIR, RUN_INFO_FILE, create_run_dir, load_run


@pytest.fixture
def tiny_run(tmp_path):
    tokenizer = build_char(["hello world, a tiny corpus\n"], [EOT])
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=1, n_heads=2, d_model=16, max_seq_len=16)
    model = build_model(cfg, tokenizer.vocab_size)
    run_dir = create_run_dir(tmp_path / "run", model, cfg, tokenizer)
    # A training checkpoint also holds optimizer state: add a file the loaders never read.
    path = ckpt.resolve_checkpoint(run_dir / CHECKPOINTS_DIR)[0]
    (path / "optimizer.pt").write_bytes(b"optimizer state" * 10)
    state = json.loads((path / ckpt.STATE_FILE).read_text())
    state["files"]["optimizer.pt"] = {
        "bytes": 150,
        "sha256": ckpt.file_sha256(path / "optimizer.pt"),
    }
    (path / ckpt.STATE_FILE).write_text(json.dumps(state))
    return run_dir, path


def _flip_a_byte(file):
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def test_load_run_ignores_damage_to_files_it_does_not_load(tiny_run):
    run_dir, path = tiny_run
    _flip_a_byte(path / "optimizer.pt")
    with pytest.raises(CheckpointError, match="checksum"):  # a resume would refuse it
        ckpt.verify_checkpoint(path)
    assert load_run(run_dir).step == 0  # generation and eval read only the weights


def test_load_run_refuses_damaged_weights(tiny_run):
    run_dir, path = tiny_run
    _flip_a_byte(path / "model.safetensors")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_run(run_dir)


def test_run_info_records_the_command_not_the_callers_argv(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    info = json.loads((run_dir / RUN_INFO_FILE).read_text())
    assert info["command"] is None and info["invoked_from"] == "python"
