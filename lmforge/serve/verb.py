"""`lmforge serve RUN [key=value ...]`: serve a run over an OpenAI-compatible HTTP API.

Binds 127.0.0.1:8000 unless told otherwise, logs the address it listens on, loads the model on a
thread (`/health` is 503 until then) and serves with uvicorn. SIGTERM or Ctrl-C stops accepting,
lets in-flight requests finish for up to `grace_s` seconds, cancels the rest and exits 0. The key
comes from `api_key=` or `$LMFORGE_API_KEY`. Torch is imported only when the verb runs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from pydantic import Field

from lmforge.config import DeviceName, DtypeName, LinearKernelName, Section
from lmforge.errors import ConfigError
from lmforge.verb import Flags, Verb

log = logging.getLogger(__name__)


class ServeConfig(Section):
    run: str | None = Field(None, description="run dir to serve (positional)")
    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port, logged)")
    api_key: str | None = Field(
        None, description="require 'Authorization: Bearer KEY' on /v1 (default $LMFORGE_API_KEY)"
    )
    max_batch: int = Field(8, ge=1, description="rows decoded together (concurrent choices)")
    max_queue: int = Field(64, ge=0, description="requests waiting for a row before 429")
    max_body_bytes: int = Field(1 << 20, ge=1, description="larger request bodies get 413")
    grace_s: float = Field(10.0, ge=0, description="on SIGTERM: seconds to finish requests")
    checkpoint: str = Field("latest", description="which checkpoint: latest | best | step_N")
    dtype: DtypeName = Field(
        "float32", description="weights/cache precision; bfloat16 is opt-in (not batch-invariant)"
    )
    device: DeviceName = Field("auto", description="auto | cpu | cuda | mps")
    compile: bool = Field(
        False, description="compile the GPT decode step at start-up for batch sizes 1..max_batch"
    )
    linear_kernel: LinearKernelName = Field(
        "auto",
        description="kernel for fp32 linears on 2-64 rows (decode batches): auto (the faster, "
        "measured at start-up) | mkl | onednn (a packed weight copy)",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    model_name: str | None = Field(None, description="model id in the API (default: run dir name)")
    cors_origins: list[str] = Field([], description="origins allowed by CORS (default: off)")


def run(cfg: ServeConfig, flags: Flags) -> int:
    from lmforge.run.rundir import is_run_dir

    if not cfg.run:
        raise ConfigError("serve needs a run dir: lmforge serve runs/x [port=8000]")
    if not is_run_dir(cfg.run):
        raise ConfigError(f"{cfg.run} is not a run dir (no config.toml and checkpoints/)")
    import uvicorn

    from lmforge.serve.app import Settings, create_app
    from lmforge.serve.metrics import Metrics

    name = cfg.model_name or Path(cfg.run).resolve().name
    api_key = cfg.api_key if cfg.api_key is not None else os.environ.get("LMFORGE_API_KEY")
    settings = Settings(name, api_key or None, cfg.max_body_bytes, list(cfg.cors_origins))
    metrics = Metrics()
    app = create_app(settings, lambda: load_served(cfg, name, metrics), metrics)
    sock = _bind(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    log.info("lmforge serve: %s on http://%s:%d (playground at /)", name, host, port)
    config = uvicorn.Config(
        app,
        log_level="warning",
        timeout_graceful_shutdown=int(round(cfg.grace_s)),
        access_log=False,
    )
    server = uvicorn.Server(config)
    stopped = threading.Event()
    # uvicorn re-raises a captured signal once it has shut down; handlers of ours make that a
    # no-op, so a graceful stop exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    server.run(sockets=[sock])
    state = app.state.lmforge
    if state.error:
        raise ConfigError(f"could not serve {cfg.run}: {state.error}")
    log.info("lmforge serve: stopped")
    return 0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every response waits ~40 ms (Nagle against the client's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc}); choose another port=") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def load_served(cfg: ServeConfig, name: str, metrics: Any) -> Any:
    """Load the run and start its engine (runs on the app's loader thread)."""

    from lmforge.infer.inference_model import prepare_for_decoding
    from lmforge.run.rundir import load_run
    from lmforge.run.tokenizer_config import load_chat_template
    from lmforge.runtime import resolve_device, resolve_dtype, set_threads
    from lmforge.serve.engine import Engine
    from lmforge.serve.routes import Served

    set_threads(cfg.threads)
    loaded = load_run(cfg.run, cfg.checkpoint, resolve_device(cfg.device))
    model = prepare_for_decoding(
        loaded.model, resolve_dtype(cfg.dtype), cfg.compile, cfg.linear_kernel
    )
    step = None
    if cfg.compile:
        from lmforge.infer.compiled import compile_decode_step

        step = compile_decode_step(model)  # None for the LSTM: nothing to compile
    engine = Engine(model, loaded.tokenizer, cfg.max_batch, cfg.max_queue, metrics, step)
    if step is not None:
        log.info("lmforge serve: compiling the decode step for 1..%d rows", cfg.max_batch)
        engine.warm_up()
    engine.start()
    template = load_chat_template(cfg.run)
    log.info(
        "lmforge serve: loaded %s step %d (%s, context %s)",
        cfg.run,
        loaded.step,
        type(model).__name__,
        model.max_context,
    )
    return Served(engine, loaded.tokenizer, name, model.max_context, template)


VERB = Verb(
    name="serve",
    summary="Serve a run over an OpenAI-compatible HTTP API (continuous batching, playground).",
    config=ServeConfig,
    run=run,
    positionals=("run",),
    usage="lmforge serve RUN [host=127.0.0.1] [port=8000] [api_key=...] [key=value ...]",
)
