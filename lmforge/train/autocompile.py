"""`compile=auto`: compile the model only when the run is long enough for compiling to pay.

The rule: after `DECIDE_AFTER` eager steps (the first is warm-up, not timed), with `t` the eager
step time and `R` the eager seconds the run has left (steps left x t, or the time budget left,
whichever ends the run first), compile when `C < R x (1 - 1/s)`: the compile time `C` is won back
by steps `s` times faster. `C` and `s` are those measured by an earlier compiled run of the same
model, batch, dtype and kernel on this CPU (cached in `compile_costs.json` beside the peaks), else
the assumed `ASSUMED_COMPILE_S` and `ASSUMED_SPEEDUP`. Inductor on a CPU needs a C++ compiler;
without one, auto stays eager.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Any

from lmforge.train.peak import cpu_key, read_cache, write_cache

log = logging.getLogger(__name__)

DECIDE_AFTER = 6  # eager steps before deciding; step 1 (allocator, kernels) is not timed
MEASURE_STEPS = 5  # compiled steps timed after the first (compiling) one, for the speedup
# Before any measurement: a cold inductor compile of a small GPT's training step (forward and
# backward graphs) takes tens of seconds on 2 cores, and steps of a small CPU model gain
# ~1.2-1.5x (fused norms, activations, RoPE); the pessimistic ends, so auto compiles only runs
# that are clearly long. A measured run replaces both.
ASSUMED_COMPILE_S = 60.0
ASSUMED_SPEEDUP = 1.2
CACHE_FILE = "compile_costs.json"


@dataclass(frozen=True)
class CompileEstimate:
    compile_s: float
    speedup: float
    measured: bool = False


@dataclass(frozen=True)
class CompileDecision:
    compile: bool
    reason: str
    eager_step_s: float | None = None
    remaining_eager_s: float | None = None
    estimate: CompileEstimate | None = None

    def record(self) -> dict[str, Any]:
        """The decision as run_info.json keeps it."""
        out: dict[str, Any] = {"compile": self.compile, "reason": self.reason}
        if self.eager_step_s is not None:
            out["eager_step_s"] = round(self.eager_step_s, 6)
        if self.remaining_eager_s is not None and math.isfinite(self.remaining_eager_s):
            out["remaining_eager_s"] = round(self.remaining_eager_s, 1)
        if self.estimate is not None:
            out["estimate"] = asdict(self.estimate)
        return out


def compile_pays(remaining_eager_s: float, estimate: CompileEstimate) -> bool:
    """Whether compiling now finishes the run's remaining work sooner than staying eager."""
    if estimate.speedup <= 1.0:
        return False
    return estimate.compile_s < remaining_eager_s * (1.0 - 1.0 / estimate.speedup)


def remaining_eager_seconds(
    step: int,
    max_steps: int | None,
    elapsed_s: float,
    max_time: float | None,
    step_s: float,
) -> float:
    """Eager seconds the run has left: to `max_steps` at `step_s` a step, or to `max_time`,
    whichever comes first (inf with neither)."""
    left = math.inf
    if max_steps is not None:
        left = max(max_steps - step, 0) * step_s
    if max_time is not None:
        left = min(left, max(max_time - elapsed_s, 0.0))
    return left


def decide(
    eager_step_s: float,
    remaining_eager_s: float,
    estimate: CompileEstimate,
) -> CompileDecision:
    """`compile=auto`'s decision from the measured eager step time and the run's length."""
    pays = compile_pays(remaining_eager_s, estimate)
    kind = "measured" if estimate.measured else "assumed"
    saving = remaining_eager_s * (1.0 - 1.0 / estimate.speedup) if estimate.speedup > 1 else 0.0
    reason = (
        f"~{remaining_eager_s:.0f} s of eager steps left ({eager_step_s * 1e3:.0f} ms each); "
        f"{kind} compile {estimate.compile_s:.0f} s for {estimate.speedup:.2f}x steps "
        f"{'saves' if pays else 'would save only'} ~{saving:.0f} s"
    )
    return CompileDecision(pays, reason, eager_step_s, remaining_eager_s, estimate)


def compiler_available() -> bool:
    """Inductor compiles CPU kernels with a C++ compiler (`CXX`, else g++/clang++/c++)."""
    names = [os.environ.get("CXX", ""), "g++", "clang++", "c++"]
    return any(name and shutil.which(name) for name in names)


def signature(parts: dict[str, Any]) -> str:
    """A stable key for what decides compile cost and gain (model config, batch, dtype, ...)."""
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


def load_estimate(key: str, threads: int) -> CompileEstimate:
    """The measured cost and gain for `key` on this CPU, else the assumed ones."""
    entry = read_cache(CACHE_FILE).get(f"{cpu_key(threads)}|{key}")
    if isinstance(entry, dict) and "compile_s" in entry:
        speedup = entry.get("speedup")
        return CompileEstimate(
            float(entry["compile_s"]),
            float(speedup) if speedup else ASSUMED_SPEEDUP,
            measured=speedup is not None,
        )
    return CompileEstimate(ASSUMED_COMPILE_S, ASSUMED_SPEEDUP)


def save_measurement(key: str, threads: int, compile_s: float, speedup: float | None) -> None:
    """Remember a compiled run's compile time (and speedup over eager, when it was measured)."""
    table = read_cache(CACHE_FILE)
    entry: dict[str, float] = {"compile_s": round(compile_s, 3)}
    if speedup is not None:
        entry["speedup"] = round(speedup, 4)
    table[f"{cpu_key(threads)}|{key}"] = entry
    write_cache(CACHE_FILE, table)
