"""Metrics sinks: flat JSONL rows, truncation on resume, TensorBoard events, the loss plot."""

from __future__ import annotations

import math

from lmforge.train.metrics import (
    JsonlSink,
    MultiSink,
    NullSink,
    TensorBoardSink,
    plot_losses,
    read_metrics,
    truncate_metrics,
)


def test_jsonl_rows_truncate_and_plot(tmp_path):
    path = tmp_path / "metrics.jsonl"
    sink = MultiSink([JsonlSink(path), NullSink()])
    for step in range(1, 7):
        sink.log({"step": step, "loss": 3.0 / step, "lr": 1e-3})
    sink.log({"step": 6, "val_loss": 1.5})
    sink.log({"step": 7, "loss": math.nan, "skipped": 1})
    sink.close()
    rows = read_metrics(path)
    assert rows[-1]["loss"] is None  # NaN is not JSON: written as null
    assert truncate_metrics(path, 4) == 4
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]
    with open(path, "a") as f:
        f.write('{"step": 5, "lo')  # a row torn by kill -9 is skipped, not fatal
    assert len(read_metrics(path)) == 4
    plot_losses(path, tmp_path / "plots" / "loss.png")
    assert (tmp_path / "plots" / "loss.png").stat().st_size > 1000


def test_tensorboard_sink_writes_events(tmp_path):
    sink = TensorBoardSink(tmp_path / "tb")
    sink.log({"step": 1, "loss": 2.0, "note": "text is skipped"})
    sink.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
