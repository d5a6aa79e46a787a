"""The app in-process (uvicorn on a thread, a real socket): /health is 503 until the model has
loaded, then 200; a failed load stays 503 with the reason; the OpenAPI document lists the OpenAI
error statuses and never 422; the Prometheus text parses line by line."""

from __future__ import annotations

import importlib.util
import re
import socket
import threading
import time

import httpx2 as httpx
import torch
from lmforge_testing import require

from lmforge.data.tokenizer import build_char
from lmforge.models import GPTConfig, build_model
from lmforge.run.tokenizer_config import DEFAULT_CHAT_TEMPLATE, ChatTemplate
from lmforge.serve.engine import Engine
from lmforge.serve.metrics import Metrics
from lmforge.serve.routes import Served


class LiveApp:
    def __init__(self, load) -> None:
        for module in ("fastapi", "uvicorn"):
            require(importlib.util.find_spec(module) is not None, f"{module} not installed")
        import uvicorn

        from lmforge.serve.app import Settings, create_app

        metrics = Metrics()
        self.app = create_app(Settings("m", api_key="k"), load, metrics)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def tiny_served() -> Served:
    tok = build_char(["abc def"], ["<|endoftext|>"])
    torch.manual_seed(0)
    model = build_model(
        GPTConfig(n_layers=1, n_heads=2, d_model=16, max_seq_len=32), tok.vocab_size
    )
    engine = Engine(model, tok, max_batch=2)
    engine.start()
    return Served(engine, tok, "m", 32, ChatTemplate(DEFAULT_CHAT_TEMPLATE, True, ("<|im_end|>",)))


def test_health_is_503_until_the_model_has_loaded():
    release = threading.Event()

    def load() -> Served:
        release.wait(10)
        return tiny_served()

    live = LiveApp(load)
    try:
        loading = httpx.get(live.url + "/health")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        r = httpx.post(
            live.url + "/v1/completions",
            json={"prompt": "a"},
            headers={"Authorization": "Bearer k"},
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        release.set()
        for _ in range(500):
            if httpx.get(live.url + "/health").status_code == 200:
                break
            time.sleep(0.01)
        assert httpx.get(live.url + "/health").json() == {
            "status": "ok",
            "queue_depth": 0,
            "active_rows": 0,
        }
    finally:
        release.set()
        live.stop()


def test_a_failed_load_stays_503_with_the_reason():
    def load() -> Served:
        raise ValueError("no such checkpoint")

    live = LiveApp(load)
    try:
        for _ in range(200):
            body = httpx.get(live.url + "/health").json()
            if body["status"] != "loading":
                break
            time.sleep(0.01)
        assert body == {"status": "error", "error": "no such checkpoint"}
    finally:
        live.stop()


def test_openapi_documents_openai_errors_and_metrics_parse():
    live = LiveApp(tiny_served)
    try:
        schema = httpx.get(live.url + "/openapi.json").json()
        responses = schema["paths"]["/v1/completions"]["post"]["responses"]
        assert {"400", "401", "404", "413", "429"} <= set(responses) and "422" not in responses
        assert "text/event-stream" in responses["200"]["content"]
        text = httpx.get(live.url + "/metrics").text
        sample = re.compile(r'^[a-z_]+(\{[a-z]+="[^"]*"\})? -?[0-9.e+Inf]+$')
        for line in text.splitlines():
            assert line.startswith("# ") or sample.match(line), line
    finally:
        live.stop()
