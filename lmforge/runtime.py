"""Where and how computation runs: device choice, threads, seeding, autocast.

Owns process-level knobs only; it never touches models or data. Nothing here runs at import time:
the CLI and the trainer call these functions explicitly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random

import numpy as np
import torch

# The key types live in the torch-free config module; re-exported here for existing imports.
from lmforge.config import DeviceName as DeviceName
from lmforge.config import DtypeName as DtypeName
from lmforge.errors import ConfigError

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available; use device=cpu")
    if name == "mps" and not (torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' requested but MPS is not available; use device=cpu")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise ConfigError(f"device '{name}' is not one of auto, cpu, cuda, cuda:N, mps")
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ConfigError(f"dtype '{name}' is not one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


def default_threads() -> int:
    """`OMP_NUM_THREADS` if set, else every core this process may use."""
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None -> `default_threads()`); returns the number used."""
    n = default_threads() if threads is None else threads
    if n < 1:
        raise ConfigError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed-precision context for the forward pass; a no-op for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("float16 autocast is GPU-only; use dtype=bfloat16 on CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


def malloc_tuning_hint() -> str | None:
    """A hint when glibc malloc is untuned on Linux CPU runs (~20% speed left on the table).

    glibc returns large activation buffers to the kernel after every step and faults them back in;
    setting GLIBC_TUNABLES keeps them (measured in DESIGN.md section 6).
    """
    if os.name != "posix" or "GLIBC_TUNABLES" in os.environ:
        return None
    return (
        "tip: export GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
        " makes CPU training ~20% faster"
    )


def tune_malloc() -> bool:
    """Apply the GLIBC_TUNABLES settings above at run time, through glibc's `mallopt`.

    Keeps large freed buffers in the heap instead of returning them to the kernel (no mmap for big
    blocks, no trimming), so each training step stops faulting its activations back in. The cost
    is that freed memory stays counted in RSS (the peak does not change). Returns True when
    applied; False off glibc (macOS, musl) or when the user already set GLIBC_TUNABLES.
    """
    if os.name != "posix" or "GLIBC_TUNABLES" in os.environ:
        return False
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    # mallopt's int argument caps the trim threshold at 2 GiB - 1, plenty to never trim.
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
