"""Without a progress bar the trainer still speaks: step 1, then a line at least every 30 s."""

from __future__ import annotations

import logging

from lmforge.train import console
from lmforge.train.console import TrainDisplay


def test_heartbeat_lines_without_a_bar(monkeypatch, caplog):
    now = [1000.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(console, "is_interactive", lambda: False)
    display = TrainDisplay(total=100, enabled=True)
    with caplog.at_level(logging.INFO, logger="lmforge.train"):
        display.update(1, {"loss": 2.5})
        now[0] += 5
        display.update(2, {"loss": 2.4})  # 5 s later: quiet
        now[0] += console.QUIET_LOG_S
        display.update(3, {"loss": 2.3})  # 30 s after the last line: speaks again
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["step 1/100: loss 2.5000", "step 3/100: loss 2.3000"]


def test_no_heartbeat_under_a_bar_or_on_other_ranks(monkeypatch, caplog):
    monkeypatch.setattr(console, "is_interactive", lambda: False)
    with caplog.at_level(logging.INFO, logger="lmforge.train"):
        TrainDisplay(total=10, enabled=False).update(1, {"loss": 1.0})  # not rank 0
    assert not caplog.records
