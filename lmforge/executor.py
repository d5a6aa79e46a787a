"""Running independent jobs in parallel: a local process pool or the tasks of a Ray cluster.

The base layer's one helper for work that splits into independent jobs (sweep points, corpus
shards): `run_jobs(fn, jobs, spec)` yields `(index, result)` as jobs finish, whichever executor
`spec.kind` names. `local` is a spawn-started process pool (one thread per job by default);
`ray` submits the same calls as Ray tasks to an existing cluster (`address`, else `RAY_ADDRESS`),
after `check_storage` has refused a multi-node cluster without a storage path every node reaches.
Ray is optional (`pip install 'lmforge[ray]'`) and imported only here, only for `kind="ray"`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import ConfigError

log = logging.getLogger(__name__)

ExecutorKind = Literal["local", "ray"]
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class ExecutorSpec:
    """Where jobs run: `kind`, at most `workers` at once (0: the cores, or the cluster's CPUs
    divided by `threads`), `threads` CPU threads per job, and for Ray the cluster `address`
    and a `storage` path that every node can read and write."""

    kind: ExecutorKind = "local"
    workers: int = 0
    threads: int = 1
    address: str | None = None
    storage: str | None = None


def available_cores() -> int:
    """The cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_workers(spec: ExecutorSpec) -> int:
    """How many jobs the local pool runs at once: `workers`, else cores // threads (at least 1)."""
    return spec.workers or max(1, available_cores() // spec.threads)


def run_jobs(
    fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], spec: ExecutorSpec
) -> Iterator[tuple[int, Any]]:
    """Call `fn(*job)` for every job; yield `(index, result)` in completion order.

    `fn` must be importable by name (a module-level function): both executors send it to other
    processes. An exception raised by a job is re-raised here when that job is reached; jobs
    still queued are then cancelled.
    """
    if not jobs:
        return iter(())
    if spec.kind == "local":
        return _run_local(fn, jobs, spec)
    if spec.kind == "ray":
        return _run_ray(fn, jobs, spec)
    raise ConfigError(f"executor={spec.kind!r} is not known; use executor=local or executor=ray")


# -- local ----------------------------------------------------------------------------------------


def _init_worker(threads: int) -> None:
    # Set before torch (or numpy) is imported in the worker, so their pools start this size.
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    # Out of the terminal's process group: Ctrl-C reaches only the driver, which passes exactly
    # one SIGINT on to each worker (a trainer that gets two aborts without its checkpoint).
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    # A driver started in the background by a shell inherits SIGINT as ignored, and so would
    # its workers: restore KeyboardInterrupt, so the SIGINT the driver passes on stops a job.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _run_local(
    fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], spec: ExecutorSpec
) -> Iterator[tuple[int, Any]]:
    workers = min(local_workers(spec), len(jobs))
    # Spawned, not forked: a forked child inherits the parent's torch thread pools and locks.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(spec.threads,)
    ) as pool:
        futures: dict[Future, int] = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=futures.__getitem__):
                    yield futures[future], future.result()
        except KeyboardInterrupt:
            # Ctrl-C (or SIGTERM, which `lmforge sweep` turns into one) reached this process
            # only: pass it on, so each job stops cleanly (a trainer checkpoints first).
            _interrupt_workers(pool)
            raise
        finally:
            for future in futures:
                future.cancel()


def _interrupt_workers(pool: ProcessPoolExecutor) -> None:
    for process in list(getattr(pool, "_processes", {}).values()):
        try:
            os.kill(process.pid, signal.SIGINT)
        except (ProcessLookupError, OSError):
            pass


# -- Ray ------------------------------------------------------------------------------------------


def ray_address(address: str | None) -> str | None:
    """The cluster to join: `address`, else `$RAY_ADDRESS`, else None (no cluster named)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "executor=ray needs Ray, which is not installed; pip install 'lmforge[ray]' "
            "(or use executor=local)"
        ) from None
    return ray


def connect_ray(address: str | None) -> Any:
    """The `ray` module, connected to the cluster at `address` (or `$RAY_ADDRESS`).

    Reuses a connection this process already holds. Without any address this is an error
    rather than a fresh private cluster: `executor=ray` means an existing cluster.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    target = ray_address(address)
    if target is None:
        raise ConfigError(
            "executor=ray needs a running Ray cluster: start one with 'ray start --head' and pass "
            "address=HOST:PORT (or set RAY_ADDRESS), or use executor=local"
        )
    try:
        ray.init(address=target, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"could not connect to the Ray cluster at address={target} ({exc}); check "
            "'ray status' there, or use executor=local"
        ) from None
    return ray


def check_storage(nodes: int, storage: str | None, out: str | Path | None = None) -> None:
    """Refuse a multi-node cluster without a shared `storage` path, before anything launches.

    On one node every job writes where the driver reads; on several, results written to a
    node's local disk would be lost to the others. With `storage` set, `out` (when given) must
    lie inside it.
    """
    if nodes > 1 and not storage:
        raise ConfigError(
            f"the Ray cluster has {nodes} nodes, so jobs need a storage path that every node can "
            "reach: set storage=/shared/path (e.g. an NFS mount) and put out= inside it"
        )
    if storage and out is not None:
        root, path = Path(storage).resolve(), Path(out).resolve()
        if root != path and root not in path.parents:
            raise ConfigError(
                f"out={out} is not inside storage={storage}; the other nodes could not reach it. "
                f"Put out= under {storage}"
            )


def _alive_nodes(ray: Any) -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def _run_ray(
    fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], spec: ExecutorSpec
) -> Iterator[tuple[int, Any]]:
    ray = connect_ray(spec.address)
    check_storage(_alive_nodes(ray), spec.storage)
    env = {var: str(spec.threads) for var in _THREAD_VARS}
    remote = ray.remote(fn).options(num_cpus=spec.threads, runtime_env={"env_vars": env})
    # At most `workers` in flight when set; otherwise Ray schedules by the CPUs each task asks.
    limit = spec.workers or len(jobs)
    queue = list(enumerate(jobs))
    running: dict[Any, int] = {}
    try:
        while queue or running:
            while queue and len(running) < limit:
                index, job = queue.pop(0)
                running[remote.remote(*job)] = index
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                yield running.pop(ref), ray.get(ref)
    finally:
        for ref in running:
            ray.cancel(ref)
