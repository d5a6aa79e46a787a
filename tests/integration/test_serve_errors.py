"""Every error status of `lmforge serve`, from real requests, and a graceful SIGTERM.

A server with one row and a one-request queue, a 4 KiB body limit and an API key: 400 naming the
field, 400 context_length_exceeded, 401 (missing or wrong key), 404 (model, route), 413, 429 with
Retry-After; all OpenAI-shaped. Last, SIGTERM lets the running stream finish and exits 0.
"""

from __future__ import annotations

import json
import threading
import time

import httpx2 as httpx
import pytest
from _serve_support import KEY, TEXT, Server, char_tokenizer, train_run
from lmforge_testing import require

try:
    import openai
except ImportError:  # pragma: no cover - the [serve] extra is missing
    openai = None

AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    require(openai is not None, "openai is not installed (pip install -e '.[serve]')")
    run = train_run(tmp_path_factory.mktemp("serve_err") / "gpt", "gpt", char_tokenizer(), TEXT)
    server = Server(
        run,
        f"api_key={KEY}",
        "max_batch=1",
        "max_queue=1",
        "max_body_bytes=4096",
        "grace_s=5",
        "model_name=m",
    )
    yield server
    server.stop()


def post(served, path: str, body, headers=AUTH) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**headers, "Content-Type": "application/json"}
    return httpx.post(served.url + path, content=data, headers=headers, timeout=30)


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "prompt": "a", "temperature": 5}, "temperature"),
        ({"model": "m", "prompt": "a", "n": 0}, "n"),
        ({"model": "m", "prompt": "a", "n": 2}, "n"),  # more choices than max_batch rows
        ({"model": "m", "prompt": "a", "max_tokens": -1}, "max_tokens"),
        ({"model": "m", "prompt": "a", "top_p": 0}, "top_p"),
        ({"model": "m", "prompt": "a", "best_of": 3}, "best_of"),
        ({"model": "m", "prompt": "a", "frobnicate": 1}, "frobnicate"),
        ({"model": "m", "prompt": "a", "presence_penalty": 1.5}, "presence_penalty"),
        ({"model": "m", "prompt": []}, "prompt"),
        ({"model": "m", "prompt": [99999]}, "prompt"),
        ({"model": 3, "prompt": "a"}, "model"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(served, body, param):
    r = post(served, "/v1/completions", body)
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param


def test_bad_chat_fields_and_bad_json(served):
    bad_role = {"model": "m", "messages": [{"role": "robot", "content": "hi"}]}
    r = post(served, "/v1/chat/completions", bad_role)
    assert r.status_code == 400 and error_of(r)["param"] == "messages.0.role"
    r = post(served, "/v1/chat/completions", {"model": "m", "messages": []})
    assert r.status_code == 400 and error_of(r)["param"] == "messages"
    r = post(served, "/v1/completions", b'{"model": "m", "prompt": ')
    assert r.status_code == 400 and "JSON" in error_of(r)["message"]


def test_context_length_exceeded(served):
    r = post(served, "/v1/completions", {"model": "m", "prompt": "a" * 300})
    err = error_of(r)
    assert r.status_code == 400 and err["code"] == "context_length_exceeded"
    assert "256" in err["message"]
    r = post(served, "/v1/completions", {"model": "m", "prompt": "abc", "max_tokens": 300})
    assert r.status_code == 400 and error_of(r)["code"] == "context_length_exceeded"
    assert error_of(r)["param"] == "max_tokens"
    chat = {"model": "m", "messages": [{"role": "user", "content": "a" * 300}]}
    r = post(served, "/v1/chat/completions", chat)
    assert r.status_code == 400 and error_of(r)["code"] == "context_length_exceeded"


def test_missing_or_wrong_key_is_401_and_open_routes_stay_open(served):
    body = {"model": "m", "prompt": "a", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
        r = post(served, "/v1/completions", body, headers)
        assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    for path in ("/health", "/metrics", "/"):
        assert httpx.get(served.url + path).status_code == 200
    assert post(served, "/tokenize", {"prompt": "a"}, {}).status_code == 401


def test_unknown_model_and_route_are_404(served):
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="gpt-4", prompt="a", max_tokens=2)
    assert info.value.body["code"] == "model_not_found"
    r = httpx.get(served.url + "/v1/nothing", headers=AUTH)
    assert r.status_code == 404 and error_of(r)["type"] == "not_found_error"
    assert httpx.get(served.url + "/v1/models/gpt-4", headers=AUTH).status_code == 404


def test_a_body_above_the_limit_is_413(served):
    r = post(served, "/v1/completions", {"model": "m", "prompt": "a" * 5000})
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"

    def chunked():  # no Content-Length: the limit still holds
        yield b'{"model": "m", "prompt": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}'

    r = httpx.post(served.url + "/v1/completions", content=chunked(), headers=AUTH)
    assert r.status_code == 413


def test_a_full_queue_is_429_with_retry_after(served):
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
    long = client.completions.create(
        model="m", prompt="the", max_tokens=250, stream=True, extra_body={"ignore_eos": True}
    )
    next(iter(long))  # the only row is taken
    waiting = threading.Thread(
        target=lambda: post(served, "/v1/completions", {"model": "m", "prompt": "a"})
    )
    waiting.start()
    deadline = time.monotonic() + 10
    while served.health()["queue_depth"] < 1 and time.monotonic() < deadline:
        time.sleep(0.002)
    r = post(served, "/v1/completions", {"model": "m", "prompt": "b"})
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"] == "1" and error_of(r)["code"] == "queue_full"
    long.close()
    waiting.join(30)
    text = httpx.get(served.url + "/metrics").text
    assert 'lmforge_requests_total{status="429"} 1' in text


def test_no_client_mistake_is_a_500(served):
    text = httpx.get(served.url + "/metrics").text
    assert 'status="500"' not in text


def test_sigterm_finishes_the_running_stream_and_exits_0(served):
    """Runs last in this module: it stops the server."""
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
    stream = client.completions.create(
        model="m", prompt="the", max_tokens=200, stream=True, extra_body={"ignore_eos": True}
    )
    chunks = iter(stream)
    next(chunks)
    served.proc.terminate()  # SIGTERM
    rest = list(chunks)
    assert rest[-1].choices[0].finish_reason == "length"
    assert served.proc.wait(10) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(served.url + "/health", timeout=2)
