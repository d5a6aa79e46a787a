"""Server metrics in the Prometheus text exposition format (version 0.0.4), without a client lib.

Counters (requests by status, prompt and generated tokens), gauges (queue depth, active rows) and
two histograms (decode batch size, time to first token). Written by the engine thread and the
HTTP handlers; plain int/float updates under the GIL are atomic enough for monitoring.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """Cumulative buckets, sum and count, as Prometheus expects."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            le = "+Inf" if bound == float("inf") else _num(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        out.append(f"{name}_sum {_num(self.sum)}")
        out.append(f"{name}_count {self.count}")
        return out


class Metrics:
    """Everything `/metrics` reports. `active_rows` is read live from the engine when given."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.queue_depth = 0
        self.active_rows: Callable[[], int] = lambda: 0
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.ttft = Histogram(TTFT_BUCKETS)

    def reset(self) -> None:
        """Zero every counter and histogram (after a warm-up, which is not traffic)."""
        active_rows = self.active_rows
        self.__init__()
        self.active_rows = active_rows

    def count_request(self, status: str, n: int = 1) -> None:
        with self._lock:
            self.requests[status] = self.requests.get(status, 0) + n

    def observe_batch(self, rows: int) -> None:
        self.batch_size.observe(rows)

    def observe_ttft(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def render(self) -> str:
        lines = [
            "# HELP lmforge_requests_total Requests by outcome (ok, cancelled, or an HTTP status).",
            "# TYPE lmforge_requests_total counter",
        ]
        with self._lock:
            statuses = sorted(self.requests.items())
        lines += [f'lmforge_requests_total{{status="{s}"}} {n}' for s, n in statuses]
        simple = [
            (
                "lmforge_prompt_tokens_total",
                "counter",
                "Prompt tokens prefilled.",
                self.prompt_tokens,
            ),
            ("lmforge_generated_tokens_total", "counter", "Tokens sampled.", self.generated_tokens),
            ("lmforge_queue_depth", "gauge", "Requests waiting for a row.", self.queue_depth),
            ("lmforge_active_rows", "gauge", "Rows in the decode batch.", self.active_rows()),
        ]
        for name, kind, text, value in simple:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        for name, text, hist in (
            ("lmforge_decode_batch_size", "Rows per decode step.", self.batch_size),
            ("lmforge_time_to_first_token_seconds", "Arrival to first token.", self.ttft),
        ):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} histogram", *hist.lines(name)]
        return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))
