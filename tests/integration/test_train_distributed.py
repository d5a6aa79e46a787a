"""torchrun with 2 CPU ranks (gloo, 1 thread each): DDP and FSDP2 give the losses of a single
process with the same global batch, resume, and leave a consolidated model.safetensors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from _train_support import make_data_dir, train_config, train_losses

from lmforge.config import save_config
from lmforge.run.rundir import load_run
from lmforge.train.trainer import run
from lmforge.verb import Flags

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# Global batch 2 x 4 x 16 tokens: accumulated twice in one process, once per rank in two.
# A constant schedule lets the run stop at step 4 and resume to 8 without changing the lr.
SETTINGS = {
    "train__batch_tokens": 128,
    "train__max_steps": 8,
    "schedule__kind": "constant",
    "eval__every": 4,
    "train__tensorboard": False,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    assert run(train_config(data, out, **SETTINGS), Flags()) == 0
    return out


def torchrun(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "lmforge"]
    proc = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_match_one_process_and_resume(data, reference, tmp_path, parallel):
    recipe = tmp_path / "recipe.toml"
    save_config(train_config(data, tmp_path / "unused", **SETTINGS), recipe)
    out = tmp_path / parallel
    torchrun("train", str(recipe), str(out), f"train.parallel={parallel}", "train.max_steps=4")
    assert sorted(train_losses(out)) == [1, 2, 3, 4]
    torchrun("train", "--resume", str(out), "train.max_steps=8")
    got, want = train_losses(out), train_losses(reference)
    assert got.keys() == want.keys()
    assert all(abs(got[k] - want[k]) < 1e-5 for k in want), (got, want)
    # One consolidated model.safetensors, whatever the sharding, readable by every verb.
    dist_model, single_model = load_run(out).model, load_run(reference).model
    for a, b in zip(dist_model.parameters(), single_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
