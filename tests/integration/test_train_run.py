"""`lmforge train` end to end on a tiny data dir: run-dir contents, rules and loop features."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.distributed
from _train_support import make_data_dir, read_rows, train_config, train_losses

from lmforge.errors import CheckpointError, ConfigError
from lmforge.run.rundir import RunLock, load_run
from lmforge.train.trainer import run
from lmforge.verb import Flags


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("run"))


def test_run_dir_layout_and_rows(data, tmp_path, monkeypatch):
    # The single-process path must never touch torch.distributed.
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.distributed called in a single-process run")

    for name in ("init_process_group", "all_reduce", "barrier", "broadcast_object_list"):
        monkeypatch.setattr(torch.distributed, name, forbidden)
    out = tmp_path / "run"
    assert run(train_config(data, out), Flags(argv=("lmforge", "train"))) == 0
    for name in ("config.toml", "tokenizer.json", "metrics.jsonl", "run_info.json", "samples.txt"):
        assert (out / name).is_file(), name
    assert (out / "plots" / "loss.png").is_file() and list((out / "tb").iterdir())
    assert not (out / "train.lock").exists()
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000012"
    info = json.loads((out / "run_info.json").read_text())
    assert info["lmforge_version"] and info["libraries"]["torch"] and info["device"] == "cpu"
    rows = read_rows(out)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 13))  # log_every=1
    for row in train_rows:
        assert {"step", "loss", "lr", "tokens_per_s", "mfu"} <= row.keys()
        assert all(not isinstance(v, dict | list) for v in row.values())  # flat
    val_rows = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in val_rows] == [6, 12] and "val_bpb" in val_rows[0]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert "=== step 6 ===" in (out / "samples.txt").read_text()


def test_load_run_selects_checkpoints(data, tmp_path):
    out = tmp_path / "run"
    assert run(train_config(data, out, checkpoint__keep_last=3), Flags()) == 0
    latest = load_run(out)
    assert latest.step == 12 and latest.checkpoint_dir.name == "step_000012"
    assert latest.config.model.n_layers == 2 and latest.tokenizer.vocab_size > 10
    assert not latest.model.training
    assert load_run(out, "best").step in (6, 12)
    assert load_run(out, "step_6").step == 6
    with pytest.raises(CheckpointError, match="step_000006, step_000012"):
        load_run(out, "step_5")
    with pytest.raises(CheckpointError, match="not a run dir"):
        load_run(tmp_path)


def test_existing_out_needs_a_flag_and_lock_blocks_a_second_trainer(data, tmp_path):
    out = tmp_path / "run"
    cfg = train_config(data, out, train__max_steps=2)
    assert run(cfg, Flags()) == 0
    with pytest.raises(ConfigError, match="--resume .* --overwrite"):
        run(cfg, Flags())
    with RunLock(out), pytest.raises(CheckpointError, match="another trainer"):
        run(cfg, Flags(overwrite=True))
    assert run(cfg, Flags(overwrite=True)) == 0
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match="not a run dir"):
        run(train_config(data, stranger), Flags(overwrite=True))
    assert (stranger / "keep.txt").exists()


def test_non_finite_losses_skip_then_stop(data, tmp_path):
    out = tmp_path / "nan"
    # A huge SGD step without clipping overflows the weights within a few steps.
    cfg = train_config(
        data,
        out,
        optim__name="sgd",
        optim__lr=1e6,
        train__grad_clip=0,
        train__max_bad_steps=3,
        train__max_steps=50,
        checkpoint__every=1,
        eval__every=1000,
    )
    assert run(cfg, Flags()) == 1
    rows = read_rows(out)
    skipped = [r for r in rows if r.get("skipped")]
    assert len(skipped) == 3 and all(
        r["loss"] is None or not math.isfinite(r["loss"]) for r in skipped
    )
    good = load_run(out)  # the last good checkpoint is intact and finite
    assert all(torch.isfinite(p).all() for p in good.model.parameters())


def test_accumulation_matches_the_large_batch(data, tmp_path):
    big = train_config(data, tmp_path / "big", train__batch_size=8, train__max_steps=4)
    acc = train_config(
        data, tmp_path / "acc", train__batch_size=2, train__batch_tokens=8 * 16, train__max_steps=4
    )
    assert run(big, Flags()) == 0 and run(acc, Flags()) == 0
    a, b = train_losses(tmp_path / "big"), train_losses(tmp_path / "acc")
    assert a.keys() == b.keys()
    assert all(abs(a[k] - b[k]) < 1e-5 for k in a)
    with pytest.raises(ConfigError, match="batch_tokens"):
        run(train_config(data, tmp_path / "bad", train__batch_tokens=100), Flags())


def test_bf16_autocast_and_muon_on_cpu(data, tmp_path):
    cfg = train_config(data, tmp_path / "bf16", dtype="bfloat16", optim__name="muon")
    assert run(cfg, Flags()) == 0
    losses = train_losses(tmp_path / "bf16")
    assert losses[12] < losses[1]


def test_max_time_budget_stops_the_run(data, tmp_path):
    out = tmp_path / "timed"
    cfg = train_config(data, out, train__max_time=1.5, eval__every=10**6, sample__every=0)
    cfg.train.max_steps = None
    assert run(cfg, Flags()) == 0
    state = json.loads(next((out / "checkpoints").glob("step_*/state.json")).read_text())
    assert state["finished"] and 1.5 <= state["elapsed_s"] < 10
    rows = [r for r in read_rows(out) if "lr" in r]
    assert rows[-1]["lr"] < max(r["lr"] for r in rows)  # the schedule decayed on time


def test_init_from_continues_pretraining(data, tmp_path):
    base = tmp_path / "base"
    assert run(train_config(data, base), Flags()) == 0
    # Ask for a different model: init.from wins, and the saved config says so.
    cont = train_config(data, tmp_path / "cont", model__n_layers=1, **{"init__from": str(base)})
    assert run(cont, Flags()) == 0
    loaded = load_run(tmp_path / "cont")
    assert loaded.model_config.n_layers == 2
    fresh_first = train_losses(base)[1]
    assert train_losses(tmp_path / "cont")[1] < fresh_first - 0.2


def test_the_machine_picture_is_logged_and_recorded(data, tmp_path, monkeypatch, caplog):
    """Without train.peak_tflops, every matmul kernel's peak is measured (once per CPU, cached),
    printed in one line at start-up and kept in run_info.json beside the CPU's flags."""
    from lmforge.train import peak

    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(peak, "PEAK_SIZE", 256)  # a small matmul keeps the test quick
    out = tmp_path / "run"
    cfg = train_config(data, out, train__max_steps=2)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"peak_tflops": None})})
    with caplog.at_level("INFO"):
        assert run(cfg, Flags()) == 0
    info = json.loads((out / "run_info.json").read_text())
    assert set(info["peaks"]) == {"float32", "bfloat16"} and info["peaks"]["float32"]["mkl"] > 0
    assert "flags" in info["cpu"] and info["cpu"]["model"]
    lines = [r.getMessage() for r in caplog.records if "peak TFLOP/s" in r.getMessage()]
    assert len(lines) == 1 and "float32 mkl" in lines[0]
    rows = [r for r in read_rows(out) if "mfu" in r]
    fastest = max(info["peaks"]["float32"].values())  # MFU's denominator: the fastest kernel
    per_token = load_run(out).model.flops_per_token(cfg.seq_len)
    assert rows
    for r in rows:
        assert r["mfu"] == pytest.approx(per_token * r["tokens_per_s"] / (fastest * 1e12))
