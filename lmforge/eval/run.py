"""`lmforge eval RUN [RUN ...] [task=NAME] [key=value ...]`: score runs, print one table.

Without a task: loss, perplexity and bits-per-byte on the run's validation split (or `text=FILE`).
With `task=NAME`: the task from the registry (`lmforge.eval.tasks.TASKS`). Each run gets its own
`eval/<task>.json|md`; stdout gets one Markdown table with a column per run.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

from lmforge.errors import ConfigError
from lmforge.eval.config import EvalConfig
from lmforge.eval.report import markdown_table
from lmforge.runtime import autocast, resolve_device, resolve_dtype, seed_everything, set_threads
from lmforge.verb import Flags

log = logging.getLogger(__name__)

INTRINSIC = "intrinsic"

Metrics = dict[str, float | int | str]


def _evaluator(name: str) -> Callable[..., Metrics]:
    """The function scoring one loaded run: intrinsic metrics or a registered task."""
    if name == INTRINSIC:
        from lmforge.eval.perplexity import evaluate_intrinsic

        return evaluate_intrinsic
    from lmforge.eval.tasks import get_task

    return get_task(name).evaluate


def evaluate(cfg: EvalConfig) -> dict[str, Metrics]:
    """Library entry point: metrics per run dir (in the order given)."""
    if not cfg.runs:
        raise ConfigError("eval needs a run dir: lmforge eval runs/NAME [task=sst2] [key=value]")
    from lmforge.run.rundir import load_run

    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype)
    name = cfg.task.name or INTRINSIC
    score = _evaluator(name)  # an unknown task fails before any run is loaded
    results: dict[str, Metrics] = {}
    for run_dir in cfg.runs:
        seed_everything(cfg.seed)
        run = load_run(run_dir, cfg.checkpoint, device)
        log.info("evaluating %s (%s) on %s", run_dir, run.checkpoint_dir.name, name)
        with autocast(device, dtype):
            results[run_dir] = score(run, cfg)
        del run
        gc.collect()  # one model in memory at a time
    return results


def run(cfg: EvalConfig, flags: Flags) -> int:
    results = evaluate(cfg)
    print(markdown_table(results, title=cfg.task.name or INTRINSIC))
    return 0
