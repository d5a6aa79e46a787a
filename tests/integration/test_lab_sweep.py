"""`lmforge sweep` end to end: run dirs, sweep.json, resume after Ctrl-C, and Ray == local.

Tiny GPTs on a char data dir; every job uses one thread, so the local pool and Ray tasks must give
bit-identical losses. The Ray test uses the session's single-machine cluster (`ray_cluster`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _train_support import make_data_dir

from lmforge.config import validate_config
from lmforge.lab.fit_table import read_rows
from lmforge.lab.sweep import run_sweep
from lmforge.lab.sweep_config import SweepConfig
from lmforge.run import checkpoint as ckpt
from lmforge.run.config import TrainConfig
from lmforge.run.rundir import load_run
from lmforge.train import run as train_run

BASE = """
[model]
kind = "gpt"
n_layers = 2
d_model = 32
n_heads = 2
max_seq_len = 16
[train]
batch_size = 4
log_every = 1
peak_tflops = 0.1
tensorboard = false
[eval]
every = 5
batches = 2
[sample]
every = 0
[optim]
lr = 3e-3
[schedule]
warmup_steps = 2
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("sweepdata"))


GRID = {"sizes": [[1, 16], [2, 32]], "tokens": [640], "tasks": ["intrinsic"]}


def _sweep(tmp_path: Path, data: Path, out: str, **extra) -> SweepConfig:
    (tmp_path / "base.toml").write_text(BASE)
    raw = {"base": str(tmp_path / "base.toml"), "data": str(data), "out": str(tmp_path / out),
           "workers": 2, "grid": GRID, **extra}  # fmt: skip
    return validate_config(SweepConfig, raw)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory, data: Path) -> tuple[SweepConfig, dict]:
    """The two-point sweep on the local pool, once for the module."""
    config = _sweep(tmp_path_factory.mktemp("local"), data, "sw")
    return config, run_sweep(config)


def _losses(out: Path) -> dict[str, float]:
    index = json.loads((out / "sweep.json").read_text())
    return {p["name"]: p["loss"] for p in index["points"]}


def _listing(out: Path) -> list[str]:
    runs = out / "runs"
    return sorted(str(p.relative_to(runs)) for p in runs.rglob("*") if "tb" not in p.parts)


def test_local_sweep_run_dirs_index_and_rerun(local_sweep: tuple[SweepConfig, dict]) -> None:
    config, index = local_sweep
    out = Path(config.out)
    assert index["status"] == {"done": 2}
    for point in index["points"]:
        assert point["status"] == "done" and point["D"] == 640 and point["steps"] == 10
        assert point["C"] == point["flops_per_token"] * 640
        assert point["N"] > point["N_non_embedding_with_head"] > point["N_non_embedding"]
        run = load_run(out / point["run_dir"])  # an ordinary run dir
        assert run.step == 10
        rows = [json.loads(x) for x in (out / point["run_dir"] / "metrics.jsonl").open()]
        assert point["loss"] == [r["val_loss"] for r in rows if "val_loss" in r][-1]
        assert point["tasks"]["intrinsic"]["loss"] > 0
    rows, skipped = read_rows(out)  # what `lmforge fit` reads
    assert len(rows) == 2 and skipped == []
    # Rerun: a no-op (no checkpoint rewritten).
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("state.json")}
    again = run_sweep(config)
    assert _losses(out) == {p["name"]: p["loss"] for p in again["points"]}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("state.json")} == stamps


def test_ctrl_c_leaves_nothing_finished_and_rerun_resumes(tmp_path: Path, data: Path) -> None:
    # 1000 steps (~5 s idle): the SIGINT must land mid-training; at 200 steps (~1 s) the point
    # could finish between the first evaluation and the signal.
    long = {"sizes": [[1, 16]], "tokens": [64 * 1000]}
    config = _sweep(tmp_path, data, "sw", workers=1, grid=long, overrides={"eval": {"every": 25}})
    assert config.grid.tasks == []
    recipe = tmp_path / "sweep.toml"
    from lmforge.config import save_config

    save_config(config, recipe)
    cli = [sys.executable, "-m", "lmforge", "sweep", str(recipe)]
    # Its own process group with SIGINT at its default, like a terminal's foreground job (a
    # suite started as `make test &` from a script would otherwise hand it SIGINT ignored).
    proc = subprocess.Popen(
        cli,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    metrics = tmp_path / "sw" / "runs" / "l1_d16_t6.4e4" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until it trains past its first checkpoint
        if metrics.is_file() and metrics.read_text().count("val_loss") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the point finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output.decode()
    index = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [p["status"] for p in index["points"]] == ["interrupted"]
    root = metrics.parent / "checkpoints"
    _, state = ckpt.resolve_checkpoint(root, "latest")
    assert not state["finished"] and 0 < state["step"] < 1000
    # The same command resumes the point and finishes it.
    index = run_sweep(config)
    assert index["status"] == {"done": 1}
    # ... with the loss of a run that was never interrupted (bit-exact resume on CPU).
    point_train = json.loads(json.dumps(index["points"][0]))
    straight = tmp_path / "straight"
    saved = validate_config(TrainConfig, _train_dict(metrics.parent, straight))
    assert train_run(saved) == 0
    rows = [json.loads(x) for x in (straight / "metrics.jsonl").open()]
    assert point_train["loss"] == [r["val_loss"] for r in rows if "val_loss" in r][-1]


def _train_dict(run_dir: Path, out: Path) -> dict:
    from lmforge.run.rundir import load_train_config

    raw = load_train_config(run_dir).model_dump(mode="json", by_alias=True)
    return {**raw, "out": str(out)}


@pytest.mark.slow
def test_ray_sweep_equals_local(
    tmp_path: Path, data: Path, ray_cluster: str, local_sweep: tuple[SweepConfig, dict]
) -> None:
    config, local = local_sweep
    remote = run_sweep(_sweep(tmp_path, data, "ray", executor="ray", address=ray_cluster))
    assert remote["status"] == {"done": 2}
    assert _listing(Path(config.out)) == _listing(tmp_path / "ray")
    # Bit-identical: the same float, not approximately.
    assert _losses(tmp_path / "ray") == _losses(Path(config.out))
    assert [p["tasks"] for p in remote["points"]] == [p["tasks"] for p in local["points"]]
    assert [p["name"] for p in remote["points"]] == [p["name"] for p in local["points"]]
