"""SIGINT/SIGTERM handling for the training loop: finish the step, checkpoint, then exit.

Handlers are installed explicitly because a process started in the background by a shell script
inherits SIGINT as *ignored*, so Python's default KeyboardInterrupt never comes. The first signal
sets a flag the loop polls after each step; a second one aborts at once (KeyboardInterrupt).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopRequest:
    """Installs handlers on `install()`; `signum` is the first signal received (None: none)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 1) if self.signum is not None else 0

    def install(self) -> StopRequest:
        # signal.signal works only in the main thread; elsewhere (a notebook worker) we skip it.
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_CODES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # second signal: the user really wants out now
        self.signum = signum
        name = signal.Signals(signum).name
        log.warning("%s received: finishing this step and writing a checkpoint", name)

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()
