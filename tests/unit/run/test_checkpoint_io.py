"""Checkpoint dirs: atomic layout, checksums, fallback past corrupted ones, pointers, pruning."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from lmforge.errors import CheckpointError
from lmforge.run import checkpoint as ckpt


def write(root, step, payload=b"weights", pointer=True):
    tmp = ckpt.begin_checkpoint(root, step)
    (tmp / "model.bin").write_bytes(payload * 100)
    final = ckpt.finish_checkpoint(tmp, {"step": step})
    if pointer:
        ckpt.set_pointer(root, ckpt.LATEST, final)
    return final


def test_round_trip_and_pointer(tmp_path):
    write(tmp_path, 10)
    path = write(tmp_path, 20)
    assert path.name == "step_000020" and not (tmp_path / "step_000020.tmp").exists()
    found, state = ckpt.resolve_checkpoint(tmp_path)
    assert found == path and state["step"] == 20
    assert state["files"]["model.bin"]["bytes"] == 700
    assert ckpt.resolve_checkpoint(tmp_path, "step_10")[1]["step"] == 10
    assert ckpt.resolve_checkpoint(tmp_path, "10")[1]["step"] == 10


def test_corrupted_latest_falls_back_with_warning(tmp_path, caplog):
    write(tmp_path, 10)
    bad = write(tmp_path, 20)
    data = bytearray((bad / "model.bin").read_bytes())
    data[5] ^= 0xFF  # same size, different content: only the checksum notices
    (bad / "model.bin").write_bytes(bytes(data))
    found, state = ckpt.resolve_checkpoint(tmp_path)
    assert state["step"] == 10
    assert "skipping checkpoint step_000020" in caplog.text
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.resolve_checkpoint(tmp_path, "step_20")  # named explicitly: never falls back


def test_torn_write_is_ignored(tmp_path):
    write(tmp_path, 10)
    # A process killed mid-write leaves a temp dir, or a dir without state.json.
    torn = ckpt.begin_checkpoint(tmp_path, 20)
    (torn / "model.bin").write_bytes(b"partial")
    (tmp_path / "step_000030").mkdir()
    (tmp_path / "step_000030" / "model.bin").write_bytes(b"x")
    assert ckpt.resolve_checkpoint(tmp_path)[1]["step"] == 10
    truncated = write(tmp_path, 40)
    with open(truncated / "model.bin", "r+b") as f:
        f.truncate(10)
    assert ckpt.resolve_checkpoint(tmp_path)[1]["step"] == 10


def test_missing_names_are_listed(tmp_path):
    write(tmp_path, 10)
    with pytest.raises(CheckpointError, match="step_000010"):
        ckpt.resolve_checkpoint(tmp_path, "step_99")
    with pytest.raises(CheckpointError, match="no 'best'"):
        ckpt.resolve_checkpoint(tmp_path, "best")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        ckpt.resolve_checkpoint(tmp_path / "nothing")


def test_prune_keeps_newest_and_best(tmp_path):
    first = write(tmp_path, 1)
    ckpt.set_pointer(tmp_path, ckpt.BEST, first)
    for step in range(2, 6):
        write(tmp_path, step)
    ckpt.prune_checkpoints(tmp_path, keep_last=2)
    names = [p.name for _, p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step_000001", "step_000004", "step_000005"]
    assert ckpt.resolve_checkpoint(tmp_path, "best")[1]["step"] == 1


def test_rewriting_a_step_replaces_it(tmp_path):
    write(tmp_path, 5, b"old")
    path = write(tmp_path, 5, b"new")
    assert (path / "model.bin").read_bytes().startswith(b"new")
    assert ckpt.resolve_checkpoint(tmp_path)[1]["step"] == 5


def test_rng_state_round_trips_through_json():
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    state = json.loads(json.dumps(ckpt.capture_rng()))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    ckpt.restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
