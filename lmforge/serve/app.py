"""The ASGI app: routes, the API-key check, the body-size limit and OpenAI-shaped errors.

`create_app(settings, load)` returns a FastAPI app whose lifespan loads the model on a thread
(`/health` answers 503 until it is ready) and stops the engine at shutdown. Errors are always
`{"error": {"message", "type", "param", "code"}}`: 400 for a bad field (naming it), 401 for a
missing or wrong key (compared in constant time), 404 for an unknown model or route, 413 above
`max_body_bytes`, 429 with Retry-After when the queue is full; a client's mistake is never a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmforge import __version__
from lmforge.serve import routes
from lmforge.serve.metrics import Metrics
from lmforge.serve.protocol import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    ErrorResponse,
    TokenizeRequest,
    message_dicts,
)

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """What the app needs besides the model: names, limits, the key, CORS."""

    model_name: str
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    cors_origins: list[str] = field(default_factory=list)


@dataclass
class _State:
    served: routes.Served | None = None
    error: str | None = None
    created: int = 0


def create_app(
    settings: Settings, load: Callable[[], routes.Served], metrics: Metrics | None = None
) -> FastAPI:
    """The app; `load()` runs on a thread at start-up and returns the served model."""
    metrics = metrics or Metrics()
    state = _State()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import time

        state.created = int(time.time())
        ready = asyncio.Event()
        loop = asyncio.get_running_loop()

        def load_now() -> None:
            try:
                state.served = load()
                metrics.active_rows = lambda: state.served.engine.active_rows
            except Exception as exc:  # reported by /health and the log; the verb exits
                log.error("could not load the model: %s", exc)
                state.error = str(exc)
            loop.call_soon_threadsafe(ready.set)

        threading.Thread(target=load_now, name="lmforge-load", daemon=True).start()
        app.state.ready = ready
        yield
        if state.served is not None:
            state.served.engine.stop()

    app = FastAPI(
        title="lmforge serve",
        version=__version__,
        description="An OpenAI-compatible API over one lmforge run (continuous batching).",
        lifespan=lifespan,
    )
    app.state.lmforge = state
    _install_errors(app, metrics)

    def served() -> routes.Served:
        if state.served is None:
            status = "failed to load" if state.error else "still loading"
            raise ApiError(503, f"the model is {status}", type="server_error", code="not_ready")
        return state.served

    def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.api_key}"
        # compare_digest takes as long for a near miss as for a wild guess.
        if not hmac.compare_digest(given.encode(), expected.encode()):
            what = "Incorrect API key provided" if given else "Missing API key"
            raise ApiError(
                401,
                f"{what}; send 'Authorization: Bearer <key>'",
                type="invalid_request_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    guarded = [Depends(check_key)]
    errors = _documented_errors(settings)
    generation = {
        **errors,
        200: {
            "description": "the completion (JSON), or server-sent events when `stream` is true",
            "content": {"application/json": {}, "text/event-stream": {}},
        },
    }

    @app.get("/health", tags=["ops"])
    def health() -> JSONResponse:
        if state.served is None:
            body = {"status": "error" if state.error else "loading", "error": state.error}
            return JSONResponse(body, status_code=503)
        engine = state.served.engine
        return JSONResponse(
            {"status": "ok", "queue_depth": engine.queue_depth, "active_rows": engine.active_rows}
        )

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics_route() -> PlainTextResponse:
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/", tags=["ops"], response_class=HTMLResponse)
    def playground() -> HTMLResponse:
        page = resources.files("lmforge.serve").joinpath("playground.html").read_text("utf-8")
        return HTMLResponse(page)

    @app.get("/v1/models", dependencies=guarded, tags=["openai"], responses=errors)
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(served(), state.created)]}

    @app.get("/v1/models/{model_id}", dependencies=guarded, tags=["openai"], responses=errors)
    def get_model(model_id: str) -> dict[str, Any]:
        s = served()
        routes.check_model(s, model_id)
        return _model_card(s, state.created)

    @app.post("/v1/completions", dependencies=guarded, tags=["openai"], responses=generation)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await routes.completions(served(), body, lambda: _disconnect(request))

    @app.post("/v1/chat/completions", dependencies=guarded, tags=["openai"], responses=generation)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        return await routes.chat_completions(served(), body, lambda: _disconnect(request))

    @app.post("/tokenize", dependencies=guarded, tags=["tokenizer"], responses=errors)
    def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        s = served()
        routes.check_model(s, body.model)
        if body.messages is not None:
            text = routes.render_messages(
                s, message_dicts(body.messages), body.add_generation_prompt
            )
        elif body.prompt is not None or body.content is not None:
            text = body.prompt if body.prompt is not None else body.content
        else:
            raise ApiError(400, "give prompt (or content) or messages", param="prompt")
        ids = s.tokenizer.encode(text)
        return {"tokens": ids, "count": len(ids), "max_model_len": s.context, "prompt": text}

    @app.get("/tokenizer_info", dependencies=guarded, tags=["tokenizer"], responses=errors)
    def tokenizer_info() -> dict[str, Any]:
        """What lm-eval's remote tokenizer (and vLLM's route of this name) reports."""
        s = served()
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": s.tokenizer.decode([s.tokenizer.eot_id]),
            "bos_token": None,
            "pad_token": None,
            "chat_template": s.template.source,
            "model_max_length": s.context,
            "vocab_size": s.tokenizer.vocab_size,
        }

    @app.post("/detokenize", dependencies=guarded, tags=["tokenizer"], responses=errors)
    def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        s = served()
        routes.check_model(s, body.model)
        bad = [t for t in body.tokens if t >= s.tokenizer.vocab_size]
        if bad:
            raise ApiError(
                400,
                f"token id {bad[0]} is outside the vocabulary ({s.tokenizer.vocab_size})",
                param="tokens",
            )
        return {"prompt": s.tokenizer.decode(body.tokens)}

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, metrics=metrics)
    app.openapi = lambda: _openapi_without_422(app)  # type: ignore[method-assign]
    return app


def _documented_errors(settings: Settings) -> dict[int | str, dict[str, Any]]:
    """The error statuses the OpenAPI document lists (all with the ErrorResponse body)."""
    statuses = {
        400: "a bad field (`param` names it) or a prompt too long for the context",
        404: "an unknown model",
        413: "a body above max_body_bytes",
        429: "the queue is full (see Retry-After)",
        503: "the model is still loading",
    }
    if settings.api_key:
        statuses[401] = "a missing or wrong API key"
    return {s: {"model": ErrorResponse, "description": d} for s, d in statuses.items()}


def _openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents 422 for bad bodies; this server answers 400 (as OpenAI), so drop it."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        app.openapi_schema = schema
    return app.openapi_schema


async def _disconnect(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read by then, so the
    next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _model_card(served: routes.Served, created: int) -> dict[str, Any]:
    return {
        "id": served.model_name,
        "object": "model",
        "created": created,
        "owned_by": "lmforge",
        "max_model_len": served.context,
    }


def _install_errors(app: FastAPI, metrics: Metrics) -> None:
    def respond(err: ApiError) -> JSONResponse:
        metrics.count_request(str(err.status))
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return respond(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            detail = f"no route {request.method} {request.url.path}; see GET /docs"
        return respond(ApiError(exc.status_code, detail, type=kind, headers=exc.headers))


def validation_error(exc: RequestValidationError) -> ApiError:
    """The first validation problem as a 400 naming the dotted field (`messages.0.role`)."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the body is not valid JSON: {first.get('msg')}")
    if first.get("type") == "missing" and not loc:
        return ApiError(400, "the request needs a JSON body")
    # Union members repeat the field path with their type name (`prompt.str`); keep the field.
    param = ".".join(p for p in loc if not _is_type_tag(p)) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return ApiError(400, message, param=param)


def _is_type_tag(part: str) -> bool:
    return part in ("str", "int", "list[str]", "list[int]") or part.startswith(
        ("list[", "function-", "constrained-")
    )


class BodyLimit:
    """413 for bodies above `limit` bytes, declared (Content-Length) or streamed (chunked)."""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        messages: list[Message] = []
        size = 0
        while True:  # read the body (at most limit + one chunk) before the app sees it
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        err = ApiError(
            413,
            f"the request body exceeds max_body_bytes={self.limit}; send less or raise the limit",
            type="invalid_request_error",
            code="request_too_large",
        )
        self.metrics.count_request("413")
        body = json.dumps(err.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
