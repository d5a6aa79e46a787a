"""The executor helper (local pool, Ray storage rule) and sweep recipes that include others."""

from __future__ import annotations

import importlib.util
import math
import operator
import os
from pathlib import Path

import pytest
from lmforge_testing import require

from lmforge.config import build_config
from lmforge.errors import ConfigError
from lmforge.executor import ExecutorSpec, check_storage, connect_ray, local_workers, run_jobs
from lmforge.lab.sweep import included_config
from lmforge.lab.sweep_config import SweepConfig

REPO = Path(__file__).resolve().parents[3]


def test_local_pool_returns_every_result_by_index() -> None:
    jobs = [(i, 3) for i in range(5)]
    results = dict(run_jobs(operator.mul, jobs, ExecutorSpec("local", workers=2)))
    assert results == {i: 3 * i for i in range(5)}
    assert dict(run_jobs(operator.mul, [], ExecutorSpec())) == {}


def test_a_failing_job_raises_in_the_caller() -> None:
    with pytest.raises(ValueError):
        list(run_jobs(math.sqrt, [(4.0,), (-1.0,)], ExecutorSpec("local", workers=1)))


def test_workers_default_to_cores_per_thread() -> None:
    cores = len(os.sched_getaffinity(0))
    assert local_workers(ExecutorSpec(threads=1)) == cores
    assert local_workers(ExecutorSpec(threads=cores * 4)) == 1
    assert local_workers(ExecutorSpec(workers=7)) == 7


def test_storage_rule(tmp_path: Path) -> None:
    check_storage(1, None, tmp_path)  # one node: everything is local anyway
    with pytest.raises(ConfigError, match="3 nodes.*storage="):
        check_storage(3, None, tmp_path)
    check_storage(3, str(tmp_path), tmp_path / "sweeps" / "a")
    with pytest.raises(ConfigError, match="not inside storage"):
        check_storage(3, str(tmp_path / "shared"), tmp_path / "elsewhere")


def test_ray_without_a_cluster_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    require(importlib.util.find_spec("ray") is not None, "ray is not installed (the [ray] extra)")
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():  # the session's Ray test connected first: the connection is reused
        assert connect_ray(None) is ray
        return
    with pytest.raises(ConfigError, match="ray start --head"):
        connect_ray(None)


def test_include_resolves_packaged_sweeps_into_the_out_dir(tmp_path: Path) -> None:
    quick = build_config(SweepConfig, REPO / "configs" / "sweeps" / "quick.toml",
                         [f"out={tmp_path}", "workers=3"])  # fmt: skip
    assert quick.include == ["quick_grokking", "quick_induction"]
    sub = included_config(quick, "quick_grokking")
    assert sub.out == str(tmp_path / "quick_grokking") and sub.workers == 3
    assert sub.ability is not None and sub.ability.task == "modular"
    with pytest.raises(ConfigError, match="not found"):
        included_config(quick, "no_such_sweep")


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (REPO / "configs" / "sweeps").glob("*.toml"))
)
def test_every_shipped_sweep_recipe_validates(name: str) -> None:
    config = build_config(SweepConfig, REPO / "configs" / "sweeps" / name)
    assert config.out.startswith("sweeps/")
