"""Shared fixtures: where the real data lives; under CI missing data fails, never skips."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lmforge_testing import require, shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    require(path.is_dir(), f"shared data dir {path} not found (set LMFORGE_SHARED_DATA)")
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from more threads, and one thread keeps results deterministic and
    # leaves the other core free.
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A single-machine Ray cluster (`ray start --head`, 2 CPUs), its address; stopped after.

    Its processes share the process group of the `ray start` we launch, so teardown signals that
    group only (never `ray stop`, which would stop any other Ray on the machine).
    """
    try:
        import ray  # noqa: F401
    except ImportError:
        require(False, "ray is not installed (pip install -e '.[ray]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_bin = Path(sys.executable).with_name("ray")
    temp = tmp_path_factory.mktemp("ray")
    cmd = [str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=2",
           "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    output, _ = proc.communicate(timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"ray start failed: {output.decode(errors='replace')[-2000:]}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        ray.shutdown()
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(wait)
