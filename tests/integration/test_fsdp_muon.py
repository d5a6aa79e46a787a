"""torchrun with 2 CPU ranks (gloo, 1 thread each), FSDP2 and Muon: the per-step losses of one
process with the same global batch, before and after a SIGTERM and a resume (Muon's momentum
saved and loaded sharded through torch.distributed.checkpoint)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from _train_support import make_data_dir, train_config, train_losses

from lmforge.config import save_config
from lmforge.run.rundir import load_run
from lmforge.train.trainer import run
from lmforge.verb import Flags

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# Global batch 2 x 4 x 16 tokens: accumulated twice in one process, once per rank in two. A
# constant schedule makes the losses independent of max_steps, so the interrupted run can be
# compared with a fresh one of whatever length it reaches.
SETTINGS = {
    "optim__name": "muon",
    "optim__lr": 1e-2,
    # fp32 Newton-Schulz: the test is of the distributed algorithm's exactness. In bf16 (auto's
    # choice where bf16 is native) an fp32 rounding difference of ~1e-7 can flip a bf16 rounding
    # and move a loss by ~2e-5, past the 1e-5 this comparison holds to.
    "optim__muon_ns_dtype": "float32",
    "train__batch_tokens": 128,
    "schedule__kind": "constant",
    "eval__every": 1000,
    "sample__every": 0,
    "train__tensorboard": False,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("fsdp_muon"))


def torchrun(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "lmforge"]
    return subprocess.Popen(
        [*cmd, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_steps(out, n, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "metrics.jsonl").exists() and len(train_losses(out)) >= n:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    raise AssertionError("training did not log in time")


def test_fsdp_muon_matches_one_process_and_resumes_after_sigterm(data, tmp_path):
    recipe = tmp_path / "recipe.toml"
    save_config(train_config(data, tmp_path / "unused", **SETTINGS), recipe)
    out = tmp_path / "fsdp"
    proc = torchrun("train", str(recipe), str(out), "train.parallel=fsdp", "train.max_steps=100000")
    wait_for_steps(out, 3, proc)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it; the ranks checkpoint together
    _, stderr = proc.communicate(timeout=120)
    stopped = max(train_losses(out))
    assert (out / "checkpoints" / f"step_{stopped:06d}" / "dcp").is_dir(), stderr[-3000:]
    target = stopped + 4

    resumed = torchrun("train", "--resume", str(out), f"train.max_steps={target}")
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]

    reference = tmp_path / "single"
    cfg = train_config(data, reference, train__max_steps=target, **SETTINGS)
    assert run(cfg, Flags()) == 0
    got, want = train_losses(out), train_losses(reference)
    assert got.keys() == want.keys() == set(range(1, target + 1))
    before = {k: (got[k], want[k]) for k in want if k <= stopped and abs(got[k] - want[k]) >= 1e-5}
    assert not before, f"2 FSDP ranks differ from one process: {before}"
    after = {k: (got[k], want[k]) for k in want if k > stopped and abs(got[k] - want[k]) >= 1e-5}
    assert not after, f"the resumed run (from step {stopped}) differs: {after}"
    # The consolidated weights of the sharded run are the single process's.
    sharded, single = load_run(out).model, load_run(reference).model
    for a, b in zip(sharded.parameters(), single.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
