"""Real processes: SIGINT (even when inherited as ignored) and SIGTERM checkpoint and exit
non-zero; kill -9 at any moment, even mid-checkpoint, resumes from the last complete one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from _train_support import make_data_dir, train_config, train_losses

from lmforge.config import save_config
from lmforge.train.trainer import run
from lmforge.verb import Flags


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("signals"))


def start_training(recipe, out, *extra, ignore_sigint=False):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def as_background_job():
        # What a shell does for `cmd &` in a script: SIGINT ignored, inherited across exec.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(
        [sys.executable, "-m", "lmforge", "train", str(recipe), f"out={out}", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_background_job if ignore_sigint else None,
    )


def wait_for_rows(out, n, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "metrics.jsonl").exists() and len(train_losses(out)) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("training did not log in time")


def long_recipe(data, tmp_path, **kw):
    cfg = train_config(data, tmp_path / "unused", train__max_steps=100000, **kw)
    path = tmp_path / "long.toml"
    save_config(cfg, path)
    return path


@pytest.mark.parametrize(
    ("sig", "code", "ignore_sigint"),
    [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)],
    ids=["sigint-inherited-ignored", "sigterm"],
)
def test_signal_checkpoints_and_prints_how_to_resume(data, tmp_path, sig, code, ignore_sigint):
    out = tmp_path / "run"
    proc = start_training(long_recipe(data, tmp_path), out, ignore_sigint=ignore_sigint)
    wait_for_rows(out, 3, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert f"lmforge train --resume {out}" in stderr
    last = max(train_losses(out))
    assert (out / "checkpoints" / f"step_{last:06d}" / "state.json").is_file()
    assert not (out / "train.lock").exists()
    resumed = train_config(data, out, train__max_steps=last + 2)
    assert run(resumed, Flags(resume=True)) == 0
    assert max(train_losses(out)) == last + 2


def test_kill_9_during_checkpoint_writes_then_resume(data, tmp_path):
    """Checkpoint every step so the kill most likely lands inside a write; whatever it hits,
    the resumed run must reproduce the uninterrupted one exactly."""
    # A constant schedule makes the losses independent of max_steps, so the resumed run can
    # stop at any step and still be compared with a fresh run of that length.
    kw = {"checkpoint__every": 1, "eval__every": 1000, "sample__every": 0}
    kw |= {"schedule__kind": "constant", "train__tensorboard": False}
    recipe = long_recipe(data, tmp_path, **kw)
    out = tmp_path / "killed"
    proc = start_training(recipe, out)
    wait_for_rows(out, 5, proc)
    time.sleep(0.137)
    proc.kill()
    proc.wait()
    target = max(train_losses(out)) + 3
    assert run(train_config(data, out, train__max_steps=target, **kw), Flags(resume=True)) == 0
    assert run(train_config(data, tmp_path / "ref", train__max_steps=target, **kw), Flags()) == 0
    assert train_losses(out) == train_losses(tmp_path / "ref")
    assert not list((out / "checkpoints").glob("*.tmp"))  # torn writes are cleaned up
