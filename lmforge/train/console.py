"""The trainer's terminal output: a rich progress bar on stderr plus a log line every N steps.

The bar (step, loss, lr, tokens/s, MFU, ETA) shows only when stderr is a terminal; log lines go
through `logging` (so files and CI logs get them) or, under a live bar, above the bar. Without a
bar (stdout/stderr piped, CI, nohup) step 1 is logged and then a line at least every
`QUIET_LOG_S` seconds, so a log never stays silent for minutes.
"""

from __future__ import annotations

import logging
import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lmforge.progress import is_interactive, stderr_console

log = logging.getLogger("lmforge.train")

QUIET_LOG_S = 30.0  # longest silence without a progress bar


class TrainDisplay:
    """Progress for `total` steps (None: a time budget, shown as a percentage of it)."""

    def __init__(self, total: int | None, start: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=stderr_console(),
            transient=True,
            disable=not (enabled and is_interactive()),
        )
        self._task = self._progress.add_task("train", total=total, completed=start, stats="")
        self._bar = enabled and is_interactive()
        self._total = total
        self._last_line: float | None = None  # monotonic time of the last heartbeat line

    def __enter__(self) -> TrainDisplay:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def update(self, step: int, stats: dict[str, float], total: float | None = None) -> None:
        text = format_stats(stats)
        if total is not None:
            self._total = total
            self._progress.update(self._task, total=total)
        self._progress.update(self._task, completed=step, stats=text)
        if self.enabled and not self._bar:
            now = time.monotonic()
            if self._last_line is None or now - self._last_line >= QUIET_LOG_S:
                self._last_line = now
                of = f"/{int(self._total)}" if self._total else ""
                log.info("step %d%s: %s", step, of, text)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._progress.live.is_started and not self._progress.disable:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            log.info(text)


def format_stats(stats: dict[str, float]) -> str:
    parts = []
    if "loss" in stats:
        parts.append(f"loss {stats['loss']:.4f}")
    if "lr" in stats:
        parts.append(f"lr {stats['lr']:.2e}")
    if "tokens_per_s" in stats:
        parts.append(f"{stats['tokens_per_s']:,.0f} tok/s")
    if stats.get("mfu") is not None:
        parts.append(f"MFU {100 * stats['mfu']:.1f}%")
    return "  ".join(parts)
