"""One sweep point, as a job of `lmforge.executor`: train (or resume) its run dir, report numbers.

`train_point` runs in a worker process (a pool process or a Ray task) with its output going to
the point's log file; it decides between a fresh start and `--resume` from what is on disk, so
rerunning an interrupted sweep continues each point where its last checkpoint left it.
`point_result` reads a run dir's final numbers; the driver also uses it to skip finished points.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.run import checkpoint as ckpt
from lmforge.run import rundir

LOG_DIR = "logs"


def point_result(run_dir: str | Path) -> dict[str, Any]:
    """What a run dir says about its training: finished, step, tokens, seconds, final losses."""
    run_dir = Path(run_dir)
    result: dict[str, Any] = {"finished": False, "step": 0}
    root = run_dir / rundir.CHECKPOINTS_DIR
    if not (run_dir / rundir.CONFIG_FILE).is_file() or not ckpt.list_checkpoints(root):
        return result
    try:
        _, state = ckpt.resolve_checkpoint(root, ckpt.LATEST, checksums=False)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint means "not finished"
        return result
    result.update(
        finished=bool(state.get("finished")),
        step=int(state.get("step", 0)),
        tokens=int(state.get("tokens", 0)),
        seconds=float(state.get("elapsed_s", 0.0)),
    )
    result.update(_final_losses(run_dir / rundir.METRICS_FILE))
    return result


def _final_losses(path: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    speeds = []
    if not path.is_file():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of an interrupted run
        if "val_loss" in row:
            found["val_loss"] = row["val_loss"]
        if "loss" in row and "skipped" not in row:
            found["train_loss"] = row["loss"]
        if "tokens_per_s" in row:
            speeds.append(row["tokens_per_s"])
    if speeds:
        found["tokens_per_s"] = sum(speeds) / len(speeds)
    return found


def train_point(
    train: dict[str, Any], log_path: str, tasks: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Train (or resume) the point whose TrainConfig is `train`, then run the eval `tasks` on
    it; returns the exit code and the run's numbers (with `tasks`: metrics per task)."""
    from lmforge.config import validate_config
    from lmforge.run.config import TrainConfig
    from lmforge.verb import Flags

    out = Path(train["out"])
    resume = (out / rundir.CONFIG_FILE).is_file()
    if out.exists() and not resume:
        shutil.rmtree(out)  # killed before its config was written: nothing worth keeping
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    # Line-buffered, so the log can be followed (tail -f) while the point trains.
    with open(log_path, "a", encoding="utf-8", buffering=1) as log_file, _redirected(log_file):
        try:
            config = validate_config(TrainConfig, train, source=str(out))
            from lmforge.train import run as train_run

            code = train_run(config, Flags(resume=resume, argv=("lmforge", "sweep")))
            result = {"code": code, **point_result(out)}
            if code == 0 and tasks:
                result["tasks"] = evaluate_tasks(out, tasks, config.train.threads)
        except LmforgeError as exc:
            # A user-fixable problem: reported per point, the other points go on.
            print(f"error: {exc}")
            return {"code": 2, "error": str(exc), **point_result(out)}
    return result


def evaluate_tasks(run_dir: Path, tasks: tuple[str, ...], threads: int | None) -> dict[str, Any]:
    """`lmforge eval RUN task=NAME` for each task (each writes RUN/eval/NAME.json too)."""
    from lmforge.eval.config import EvalConfig
    from lmforge.eval.run import evaluate

    found = {}
    for task in tasks:
        # "intrinsic" is eval's name for no task: loss, perplexity and bits per byte.
        named = {} if task == "intrinsic" else {"task": task}
        config = EvalConfig(runs=[str(run_dir)], threads=threads, **named)
        found[task] = evaluate(config)[str(run_dir)]
    return found


def run_ability_point(job: dict[str, Any], log_path: str) -> dict[str, Any]:
    """Train one synthetic-task point (`lab/abilities`); returns exit code + its metrics."""
    from lmforge.lab.abilities.runner import train_ability_point

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    # Line-buffered, so the log can be followed (tail -f) while the point trains.
    with open(log_path, "a", encoding="utf-8", buffering=1) as log_file, _redirected(log_file):
        return train_ability_point(job)


@contextlib.contextmanager
def _redirected(stream: Any) -> Any:
    """Send this process's prints and log records to `stream` (one log file per point)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        stream.flush()
        sys.stdout.flush()
