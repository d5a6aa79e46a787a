"""`lmforge sweep RECIPE.toml`: train every point of a grid, each as an ordinary run dir.

Plans the points (`sweep_plan`), skips the finished ones, trains the rest through
`lmforge.executor` (a local process pool or Ray) with `sweep_worker.train_point`, and keeps
`OUT/sweep.json` (the format `lmforge fit` reads; docs/lab.md) current after every point, written
to a temp name and renamed. A point is `done` only once its run finished; an interrupted sweep
leaves `interrupted`/`pending` points that the same command resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import signal
import time
from concurrent.futures import BrokenExecutor
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError
from lmforge.executor import ExecutorSpec, run_jobs
from lmforge.lab.sweep_config import SweepConfig
from lmforge.lab.sweep_plan import Point, plan_points
from lmforge.lab.sweep_worker import LOG_DIR, point_result
from lmforge.verb import Flags

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
SWEEP_FORMAT_VERSION = 1
RECIPE_COPY = "sweep.toml"


def plan(config: SweepConfig) -> list[Point]:
    """The sweep's points (LM points from the base recipe, or synthetic-task points)."""
    if config.ability is not None:
        from lmforge.lab.abilities.runner import plan_ability_points

        return plan_ability_points(config)
    return plan_points(config)


def run_sweep(config: SweepConfig) -> dict[str, Any]:
    """Train every unfinished point; returns (and writes) the sweep.json contents."""
    started = time.perf_counter()
    out = Path(config.out)
    points = plan(config)
    spec = ExecutorSpec(
        config.executor, config.workers, config.threads, config.address, config.storage
    )
    if spec.kind == "ray":
        _check_ray(spec, out)
    _check_unchanged(points, out)
    out.mkdir(parents=True, exist_ok=True)
    _save_recipe(config, out)
    records = {
        p.name: {**p.record(), "fingerprint": fingerprint(p), "status": "pending"} for p in points
    }
    todo = []
    for point in points:
        result = _existing_result(point, out)
        if result is not None:
            records[point.name].update(_numbers(point, result), status="done")
        else:
            todo.append(point)
    write_sweep(out, config, records)
    log.info("sweep %s: %d points, %d to train", out, len(points), len(todo))
    print(
        f"sweep {out}: {len(points) - len(todo)} of {len(points)} points done, training "
        f"{len(todo)} ({config.executor}, {config.threads} thread(s) per point)"
    )
    status = _train(todo, out, spec, config, records)
    summary = write_sweep(out, config, records, seconds=time.perf_counter() - started)
    if status == "interrupted":
        raise KeyboardInterrupt
    if config.fit and all(r["status"] == "done" for r in records.values()):
        _fit(out)
    for name in config.include:
        summary.setdefault("included", {})[name] = run_sweep(included_config(config, name))
    return summary


def included_config(config: SweepConfig, name: str) -> SweepConfig:
    """An `include`d sweep recipe, run into OUT/<stem> with this sweep's executor settings."""
    from lmforge.config import deep_merge, load_recipe, packaged_recipes_dir, validate_config

    path = Path(name)
    if not path.is_file():
        packaged = packaged_recipes_dir() / "sweeps" / Path(name).with_suffix(".toml").name
        if not packaged.is_file():
            raise ConfigError(
                f"include: sweep recipe {name} not found (neither a file nor a packaged "
                "configs/sweeps/ recipe); fix the path"
            )
        path = packaged
    shared = {k: getattr(config, k) for k in ("workers", "threads", "executor", "address",
                                              "storage")}  # fmt: skip
    raw = deep_merge(load_recipe(path), {**shared, "out": str(Path(config.out) / path.stem)})
    return validate_config(SweepConfig, raw, source=str(path))


def _train(
    todo: list[Point],
    out: Path,
    spec: ExecutorSpec,
    config: SweepConfig,
    records: dict[str, dict[str, Any]],
) -> str:
    """Run the jobs, updating sweep.json as each ends; "interrupted" after Ctrl-C."""
    from lmforge.lab import sweep_worker

    jobs = []
    for point in todo:
        logfile = str((out / LOG_DIR / f"{point.name}.log").resolve())
        if point.ability is not None:
            jobs.append((sweep_worker.run_ability_point, (point.ability, logfile)))
        else:
            tasks = tuple(config.grid.tasks)
            jobs.append((sweep_worker.train_point, (point.train, logfile, tasks)))
        records[point.name]["status"] = "running"
    write_sweep(out, config, records)
    fn = jobs[0][0] if jobs else sweep_worker.train_point
    try:
        for index, result in run_jobs(fn, [args for _, args in jobs], spec):
            point = todo[index]
            record = records[point.name]
            if result.get("code") == 0 and result.get("finished"):
                record.update(_numbers(point, result), status="done")
                print(f"  {point.name}: loss {record['loss']:.4f} ({record['seconds']:.0f} s)")
            else:
                record["status"] = "interrupted" if result.get("code") in (130, 143) else "failed"
                if result.get("error"):
                    record["error"] = result["error"]
                why = result.get("error") or f"see {LOG_DIR}/{point.name}.log"
                print(f"  {point.name}: {record['status']} ({why})")
            write_sweep(out, config, records)
    except KeyboardInterrupt:
        for record in records.values():
            if record["status"] == "running":
                record["status"] = "interrupted"
        write_sweep(out, config, records)
        return "interrupted"
    except BaseException:
        for record in records.values():
            if record["status"] == "running":
                record["status"] = "failed"
        write_sweep(out, config, records)
        raise
    return "ok"


def fingerprint(point: Point) -> str:
    """A hash of what a point trains (its config without paths and thread counts), so a rerun
    can tell a point it may resume from one the recipe has since changed."""
    job = point.ability if point.ability is not None else point.train
    settings = json.loads(json.dumps(job, default=str))
    settings.pop("out", None)
    settings.pop("threads", None)
    if isinstance(settings.get("train"), dict):
        settings["train"].pop("threads", None)
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_unchanged(points: list[Point], out: Path) -> None:
    """Refuse to resume or reuse a point whose run dir was made with other settings."""
    path = out / SWEEP_FILE
    if not path.is_file():
        return
    try:
        old = {p["name"]: p.get("fingerprint") for p in json.loads(path.read_text())["points"]}
    except (json.JSONDecodeError, KeyError, TypeError):
        return
    for point in points:
        before = old.get(point.name)
        if before and before != fingerprint(point) and (out / point.run_dir).exists():
            raise ConfigError(
                f"point {point.name} in {out} was trained with other settings than this recipe "
                f"now gives (changed keys, e.g. overrides or lr); choose another out=, or delete "
                f"{out / point.run_dir} to train it anew"
            )


def _existing_result(point: Point, out: Path) -> dict[str, Any] | None:
    """The numbers of an already-finished point, or None when it still has to train."""
    if point.ability is not None:
        from lmforge.lab.abilities.runner import finished_ability_result

        return finished_ability_result(out / point.run_dir)
    result = point_result(out / point.run_dir)
    if result["finished"] and result["step"] >= point.steps:
        return result
    return None


def _numbers(point: Point, result: dict[str, Any]) -> dict[str, Any]:
    """The sweep.json fields a finished run adds: D, C from what it trained, final losses."""
    tokens = result.get("tokens") or point.D
    numbers = {
        "D": tokens,
        "C": float(point.flops_per_token) * tokens,
        "seconds": result.get("seconds"),
        "tokens_per_s": result.get("tokens_per_s"),
        "val_loss": result.get("val_loss"),
        "train_loss": result.get("train_loss"),
    }
    loss = result.get("val_loss", result.get("train_loss"))
    numbers["loss"] = loss
    numbers["loss_kind"] = "val_loss" if "val_loss" in result else "train_loss"
    for key in ("metrics", "history_file", "tasks"):
        if key in result:
            numbers[key] = result[key]
    return numbers


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def write_sweep(
    out: Path, config: SweepConfig, records: dict[str, dict[str, Any]], seconds: float | None = None
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for record in records.values():
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    data: dict[str, Any] = {
        "format_version": SWEEP_FORMAT_VERSION,
        "kind": "ability" if config.ability is not None else "lm",
        "task": config.ability.task if config.ability is not None else None,
        "base": config.base,
        "grid": config.grid.model_dump(mode="json"),
        "executor": config.executor,
        "threads": config.threads,
        "status": counts,
        "points": [_finite(r) for r in records.values()],
    }
    if seconds is not None:
        data["seconds"] = round(seconds, 2)
    path = out / SWEEP_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return data


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }


def _save_recipe(config: SweepConfig, out: Path) -> None:
    from lmforge.config import save_config

    save_config(config, out / RECIPE_COPY)


def _check_ray(spec: ExecutorSpec, out: Path) -> None:
    """Connect and refuse a multi-node cluster without shared storage, before any run dir."""
    from lmforge.executor import check_storage, connect_ray

    ray = connect_ray(spec.address)
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    check_storage(nodes, spec.storage, out)


def _fit(out: Path) -> None:
    from lmforge.lab.fit_config import FitConfig
    from lmforge.lab.fit_verb import fit_source, summary

    try:
        print(summary(fit_source(FitConfig(source=str(out)))))
    except ConfigError as exc:
        log.warning("warning: the sweep finished but could not be fitted: %s", exc)


def run(config: SweepConfig, flags: Flags) -> int:
    # SIGTERM (a scheduler, `kill`) stops the sweep the way Ctrl-C does: workers checkpoint.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        summary = run_sweep(config)
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume: sweep.json in {config.out}")
        return 130
    except BrokenExecutor:
        print(
            "a worker process died (killed, or out of memory?); the finished points are kept: "
            f"see {Path(config.out) / LOG_DIR} and rerun the same command to resume"
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = summary["status"]
    print(f"sweep.json: {counts} -> {Path(config.out) / SWEEP_FILE}")
    return 0 if counts.get("done", 0) == len(summary["points"]) else 1
