"""The generation routes: `/v1/completions` and `/v1/chat/completions`, streamed or not.

A request becomes one engine request per prompt (each with `n` choices); their events come back
on one asyncio queue and are rendered as OpenAI's JSON or as its server-sent-event chunks (one
`id` for all chunks; chat's first delta carries only the role; a last chunk per choice with the
`finish_reason` and no content; an optional usage chunk with no choices; `data: [DONE]`).
A client that goes away cancels its engine requests, which leave the batch within one step.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from lmforge.serve.engine import (
    ChoiceFinished,
    Engine,
    Event,
    GenerationRequest,
    PromptScored,
    QueueFull,
    RequestDone,
    TextDelta,
    TokenInfo,
)
from lmforge.serve.protocol import ApiError, ChatCompletionRequest, CompletionRequest
from lmforge.serve.sampling import RowSampling

DEFAULT_CHAT_TOKENS_UNBOUNDED = 1024  # chat's default for a model without a context (LSTM)
Watcher = Callable[[], Awaitable[None]]  # returns when the client has gone away


@dataclass
class Served:
    """What the routes need to know about the loaded run."""

    engine: Engine
    tokenizer: Any
    model_name: str
    context: int | None
    template: Any  # lmforge.run.tokenizer_config.ChatTemplate


# -- turning a request into engine requests ---------------------------------------------------


def check_model(served: Served, name: str | None) -> None:
    if name is not None and name != served.model_name:
        raise ApiError(
            404,
            f"The model '{name}' does not exist; this server serves '{served.model_name}'",
            param="model",
            code="model_not_found",
        )


def encode_prompts(served: Served, prompt: Any) -> list[list[int]]:
    """The prompt field as token-id lists ('' is the end-of-text token, as `lmforge generate`)."""
    tok = served.tokenizer
    if isinstance(prompt, str):
        prompts: list[Any] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise ApiError(400, "prompt must not be empty", param="prompt")
    out = []
    for p in prompts:
        ids = (tok.encode(p) if p else [tok.eot_id]) if isinstance(p, str) else list(p)
        if not ids:
            raise ApiError(400, "a token-id prompt must not be empty", param="prompt")
        bad = [i for i in ids if i >= tok.vocab_size]
        if bad:
            raise ApiError(
                400, f"token id {bad[0]} is outside the vocabulary ({tok.vocab_size})", "prompt"
            )
        out.append(ids)
    return out


def token_budget(
    served: Served, n_prompt: int, requested: int | None, default: int, param: str
) -> int:
    """New tokens allowed: `requested` if it fits the context (else 400), else the default cut
    to the context. The server never crops a prompt."""
    ctx = served.context
    if ctx is not None and (n_prompt > ctx or (n_prompt == ctx and requested != 0)):
        raise ApiError(
            400,
            f"This model's maximum context length is {ctx} tokens, but the prompt has "
            f"{n_prompt} tokens; shorten the prompt",
            param="messages" if param == "max_completion_tokens" else "prompt",
            code="context_length_exceeded",
        )
    if requested is not None:
        if ctx is not None and n_prompt + requested > ctx:
            raise ApiError(
                400,
                f"This model's maximum context length is {ctx} tokens. However, you requested "
                f"{n_prompt + requested} tokens ({n_prompt} in the prompt, {requested} for the "
                f"completion); reduce {param} or the prompt",
                param=param,
                code="context_length_exceeded",
            )
        return requested
    return default if ctx is None else min(default, ctx - n_prompt)


def sampling_of(req: CompletionRequest | ChatCompletionRequest) -> RowSampling:
    return RowSampling(req.temperature, req.top_p, max(req.top_k, 0))


class LoopWaker:
    """Wakes one event loop for the jobs that got events: one `call_soon_threadsafe` until the
    loop has run it, however many jobs got events meanwhile.

    A decode step hands an event to every row's request in one burst. One wake-up per request
    meant one self-pipe write, and often one switch to the loop's thread, per row and step, on
    the core the model runs on; one per burst leaves that core to the model.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}  # by id: jobs to wake at the next run (once each)
        self._scheduled = False

    def wake(self, job: Job) -> None:
        """Any thread: have `job` look at its inbox soon."""
        with self._lock:
            self._jobs[id(job)] = job
            if self._scheduled:  # a wake-up is on its way and will see this job
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the event loop has closed (shutdown): nobody is listening
            pass

    def _run(self) -> None:
        with self._lock:  # an event put after this swap schedules a run of its own
            jobs, self._jobs, self._scheduled = self._jobs, {}, False
        for job in jobs.values():
            job.wake()


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWaker] = (
    weakref.WeakKeyDictionary()
)


def loop_waker() -> LoopWaker:
    """The waker of the running event loop (one per loop; made on first use)."""
    loop = asyncio.get_running_loop()
    waker = _wakers.get(loop)
    if waker is None:
        waker = _wakers[loop] = LoopWaker(loop)
    return waker


@dataclass
class Job:
    """The engine requests of one HTTP request and the inbox their events arrive in.

    The engine thread appends events to the inbox and has the loop woken at most once until the
    loop has looked (through the loop's `LoopWaker`: per burst of events, not per token). When
    the loop falls behind the engine (many rows, one core), the text deltas that piled up for a
    choice are merged into one, so the stream sends one chunk carrying several tokens instead
    of one chunk per token: the client gets the same text and tokens, with less work per token
    on the core the model needs.
    """

    engine: Engine
    requests: list[GenerationRequest] = field(default_factory=list)
    _inbox: deque[tuple[int, Event]] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def sink(self, index: int) -> Callable[[Event], None]:
        waker = loop_waker()

        def put(event: Event) -> None:
            self._inbox.append((index, event))  # deque.append is atomic across threads
            waker.wake(self)

        return put

    def wake(self) -> None:
        """On the loop: look at the inbox."""
        self._ready.set()

    def submit(self, make: Callable[[Callable[[Event], None]], GenerationRequest]) -> None:
        req = make(self.sink(len(self.requests)))
        try:
            self.engine.submit(req)
        except QueueFull as exc:
            self.cancel()
            raise ApiError(
                429,
                f"the server is busy ({exc}); retry in a moment",
                type="server_busy",
                code="queue_full",
                headers={"Retry-After": "1"},
            ) from None
        self.requests.append(req)

    def cancel(self) -> None:
        for req in self.requests:
            req.cancel()

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        open_requests = len(self.requests)
        while open_requests:
            if not self._inbox:
                self._ready.clear()
                if not self._inbox:
                    await self._ready.wait()
                continue
            batch = [self._inbox.popleft() for _ in range(len(self._inbox))]
            for index, event in merge_deltas(batch):
                if isinstance(event, RequestDone):
                    if event.prompt_tokens < 0:
                        raise ApiError(
                            500, "the engine failed (see the server log)", type="server_error"
                        )
                    open_requests -= 1
                yield index, event


def merge_deltas(events: list[tuple[int, Event]]) -> list[tuple[int, Event]]:
    """Merge each run of consecutive text deltas of the same choice into one delta. Deltas of
    other choices may sit between them (rows of one request decode in the same step), so a
    delta joins the pending one of its choice unless another event of that choice came between."""
    out: list[tuple[int, Event]] = []
    open_delta: dict[tuple[int, int], int] = {}  # (index, choice) -> position in `out`
    for index, event in events:
        key = (index, getattr(event, "choice", -1))
        at = open_delta.get(key)
        if isinstance(event, TextDelta) and at is not None:
            prev = out[at][1]
            assert isinstance(prev, TextDelta)
            merged = TextDelta(prev.choice, prev.text + event.text, prev.tokens + event.tokens)
            out[at] = (index, merged)
            continue
        open_delta.pop(key, None)
        if isinstance(event, TextDelta):
            open_delta[key] = len(out)
        out.append((index, event))
    return out


async def unless_disconnected(body: Awaitable[dict[str, Any]], disconnected: Watcher | None) -> Any:
    """The response body, or an empty 499 once the client has gone away (the caller then cancels
    the engine requests, so a non-streamed request frees its rows too)."""
    if disconnected is None:
        return await body
    work = asyncio.ensure_future(body)
    watch = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if work in done:
        return work.result()
    work.cancel()
    return Response(status_code=499)  # nginx's "client closed request"; nobody reads it


def _request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def stream_response(job: Job, chunks: AsyncIterator[str]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield chunk
        except ApiError as exc:  # after the 200 went out: report it in the stream, as OpenAI does
            yield sse(exc.body())
            yield sse("[DONE]")
        finally:  # the client went away (or we are done): free the rows now
            job.cancel()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


# -- token strings and logprobs ---------------------------------------------------------------


def token_text(served: Served, token_id: int) -> str:
    return served.tokenizer.decode([token_id])


def completion_logprobs(
    served: Served, infos: list[TokenInfo], base_ids: list[int], offset0: int
) -> dict[str, Any]:
    """OpenAI's legacy logprobs object; `text_offset` counts characters of the returned text
    (`base_ids` are the tokens before `infos`, `offset0` the characters already returned)."""
    decode = served.tokenizer.decode
    ids = list(base_ids)
    base_len = len(decode(ids)) if ids else 0
    offsets = []
    for info in infos:
        offsets.append(offset0 + len(decode(ids)) - base_len if ids else offset0)
        ids.append(info.id)
    return {
        "tokens": [token_text(served, t.id) for t in infos],
        "token_logprobs": [t.logprob for t in infos],
        "top_logprobs": [
            {token_text(served, i): lp for i, lp in t.top} if t.logprob is not None else None
            for t in infos
        ],
        "text_offset": offsets,
    }


def chat_logprobs(served: Served, infos: list[TokenInfo]) -> dict[str, Any]:
    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = token_text(served, token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {
        "content": [
            {**entry(t.id, t.logprob or 0.0), "top_logprobs": [entry(i, lp) for i, lp in t.top]}
            for t in infos
        ]
    }


# -- /v1/completions --------------------------------------------------------------------------


async def completions(
    served: Served, req: CompletionRequest, disconnected: Watcher | None = None
) -> Any:
    check_model(served, req.model)
    if req.best_of is not None and req.best_of != req.n:
        raise ApiError(400, "best_of must equal n (no server-side ranking)", param="best_of")
    _check_n(served, req.n)
    prompts = encode_prompts(served, req.prompt)
    explicit = "max_tokens" in req.model_fields_set and req.max_tokens is not None
    budgets = [
        token_budget(served, len(p), req.max_tokens if explicit else None, 16, "max_tokens")
        for p in prompts
    ]
    stop_ids = () if req.ignore_eos else (served.tokenizer.eot_id,)
    job = Job(served.engine)
    for ids, budget in zip(prompts, budgets, strict=True):
        job.submit(
            lambda sink, ids=ids, budget=budget: GenerationRequest(
                ids,
                budget,
                sink,
                sampling_of(req),
                req.n,
                req.seed,
                req.stop_strings(),
                stop_ids,
                req.logprobs,
                prompt_logprobs=req.echo and req.logprobs is not None,
            )
        )
    rid, created = _request_id("cmpl"), int(time.time())
    head = {"id": rid, "object": "text_completion", "created": created, "model": served.model_name}
    if req.stream:
        return stream_response(job, _completion_chunks(served, req, job, prompts, head))
    try:
        return await unless_disconnected(
            _completion_body(served, req, job, prompts, head), disconnected
        )
    finally:
        job.cancel()


def _prompt_texts(served: Served, req: CompletionRequest, prompts: list[list[int]]) -> list[str]:
    if isinstance(req.prompt, str):
        return [req.prompt]
    if req.prompt and all(isinstance(p, str) for p in req.prompt):
        return list(req.prompt)
    return [served.tokenizer.decode(p) for p in prompts]


async def _completion_body(
    served: Served,
    req: CompletionRequest,
    job: Job,
    prompts: list[list[int]],
    head: dict[str, Any],
) -> dict[str, Any]:
    n = req.n
    texts: dict[int, str] = {}
    infos: dict[int, list[TokenInfo]] = {}
    reasons: dict[int, str] = {}
    scored: dict[int, list[TokenInfo]] = {}
    prompt_tokens = completion_tokens = 0
    async for i, ev in job.events():
        if isinstance(ev, PromptScored):
            scored[i] = ev.tokens
        elif isinstance(ev, TextDelta | ChoiceFinished):
            k = i * n + ev.choice
            texts[k] = texts.get(k, "") + ev.text
            infos.setdefault(k, []).extend(ev.tokens)
            if isinstance(ev, ChoiceFinished):
                reasons[k] = ev.reason
        elif isinstance(ev, RequestDone):
            prompt_tokens += ev.prompt_tokens
            completion_tokens += ev.completion_tokens
    prompt_texts = _prompt_texts(served, req, prompts)
    choices = []
    for k in range(len(prompts) * n):
        i = k // n
        prefix = prompt_texts[i] if req.echo else ""
        logprobs = None
        if req.logprobs is not None:
            lp_infos = (scored.get(i, []) if req.echo else []) + infos.get(k, [])
            base = [] if req.echo else prompts[i]
            logprobs = completion_logprobs(served, lp_infos, base, 0)
        choices.append(
            {
                "index": k,
                "text": prefix + texts.get(k, ""),
                "logprobs": logprobs,
                "finish_reason": reasons.get(k, "length"),
            }
        )
    return {**head, "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}


async def _completion_chunks(
    served: Served,
    req: CompletionRequest,
    job: Job,
    prompts: list[list[int]],
    head: dict[str, Any],
) -> AsyncIterator[str]:
    n = req.n
    prompt_tokens = completion_tokens = 0
    generated: dict[int, list[int]] = {}
    offsets: dict[int, int] = {}

    def chunk(k: int, text: str, logprobs: Any = None, reason: str | None = None) -> str:
        choice = {"index": k, "text": text, "logprobs": logprobs, "finish_reason": reason}
        return sse({**head, "choices": [choice]})

    if req.echo and req.logprobs is None:
        for i, text in enumerate(_prompt_texts(served, req, prompts)):
            for j in range(n):
                offsets[i * n + j] = len(text)
                yield chunk(i * n + j, text)
    async for i, ev in job.events():
        if isinstance(ev, PromptScored):
            text = _prompt_texts(served, req, prompts)[i]
            lp = completion_logprobs(served, ev.tokens, [], 0)
            for j in range(n):
                offsets[i * n + j] = len(text)
                yield chunk(i * n + j, text, lp)
        elif isinstance(ev, TextDelta | ChoiceFinished):
            k = i * n + ev.choice
            if ev.text or ev.tokens:
                lp = None
                if req.logprobs is not None:
                    base = (prompts[i] if not req.echo else prompts[i]) + generated.get(k, [])
                    start = offsets.get(k, 0)
                    lp = completion_logprobs(served, ev.tokens, base, start)
                generated.setdefault(k, []).extend(t.id for t in ev.tokens)
                offsets[k] = offsets.get(k, 0) + len(ev.text)
                yield chunk(k, ev.text, lp)
            if isinstance(ev, ChoiceFinished):
                yield chunk(k, "", None, ev.reason)
        elif isinstance(ev, RequestDone):
            prompt_tokens += ev.prompt_tokens
            completion_tokens += ev.completion_tokens
    if req.include_usage():
        yield sse({**head, "choices": [], "usage": usage(prompt_tokens, completion_tokens)})
    yield sse("[DONE]")


# -- /v1/chat/completions ---------------------------------------------------------------------


def render_messages(
    served: Served, messages: list[dict[str, Any]], add_generation_prompt: bool = True
) -> str:
    """The chat template applied to `messages`; a template's refusal is a 400 on `messages`."""
    from lmforge.errors import ConfigError

    try:
        return served.template.render(messages, add_generation_prompt=add_generation_prompt)
    except ConfigError as exc:
        raise ApiError(400, str(exc), param="messages") from None


def chat_prompt(served: Served, req: ChatCompletionRequest) -> str:
    return render_messages(served, req.message_dicts())


async def chat_completions(
    served: Served, req: ChatCompletionRequest, disconnected: Watcher | None = None
) -> Any:
    check_model(served, req.model)
    _check_n(served, req.n)
    if req.top_logprobs is not None and not req.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    ids = served.tokenizer.encode(chat_prompt(served, req))
    requested = req.max_completion_tokens or req.max_tokens
    param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
    default = served.context or DEFAULT_CHAT_TOKENS_UNBOUNDED
    budget = token_budget(served, len(ids), requested, default, param)
    stop_ids = () if req.ignore_eos else (served.tokenizer.eot_id,)
    stops = tuple(dict.fromkeys((*req.stop_strings(), *served.template.stop)))
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    job = Job(served.engine)
    job.submit(
        lambda sink: GenerationRequest(
            ids, budget, sink, sampling_of(req), req.n, req.seed, stops, stop_ids, logprobs
        )
    )
    rid, created = _request_id("chatcmpl"), int(time.time())
    head = {"id": rid, "created": created, "model": served.model_name}
    if req.stream:
        return stream_response(job, _chat_chunks(served, req, job, head))
    try:
        return await unless_disconnected(_chat_body(served, req, job, head), disconnected)
    finally:
        job.cancel()


async def _chat_body(
    served: Served, req: ChatCompletionRequest, job: Job, head: dict[str, Any]
) -> dict[str, Any]:
    texts: dict[int, str] = {}
    infos: dict[int, list[TokenInfo]] = {}
    reasons: dict[int, str] = {}
    done = RequestDone(0, 0)
    async for _, ev in job.events():
        if isinstance(ev, TextDelta | ChoiceFinished):
            texts[ev.choice] = texts.get(ev.choice, "") + ev.text
            infos.setdefault(ev.choice, []).extend(ev.tokens)
            if isinstance(ev, ChoiceFinished):
                reasons[ev.choice] = ev.reason
        elif isinstance(ev, RequestDone):
            done = ev
    choices = [
        {
            "index": k,
            "message": {"role": "assistant", "content": texts.get(k, "")},
            "logprobs": chat_logprobs(served, infos.get(k, [])) if req.logprobs else None,
            "finish_reason": reasons.get(k, "length"),
        }
        for k in range(req.n)
    ]
    body = {**head, "object": "chat.completion", "choices": choices}
    return {**body, "usage": usage(done.prompt_tokens, done.completion_tokens)}


async def _chat_chunks(
    served: Served, req: ChatCompletionRequest, job: Job, head: dict[str, Any]
) -> AsyncIterator[str]:
    head = {**head, "object": "chat.completion.chunk"}

    def chunk(k: int, delta: dict[str, Any], logprobs: Any = None, reason: Any = None) -> str:
        choice = {"index": k, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
        return sse({**head, "choices": [choice]})

    for k in range(req.n):
        yield chunk(k, {"role": "assistant", "content": ""})
    done = RequestDone(0, 0)
    async for _, ev in job.events():
        if isinstance(ev, TextDelta | ChoiceFinished):
            if ev.text or ev.tokens:
                lp = chat_logprobs(served, ev.tokens) if req.logprobs else None
                yield chunk(ev.choice, {"content": ev.text}, lp)
            if isinstance(ev, ChoiceFinished):
                yield chunk(ev.choice, {}, None, ev.reason)
        elif isinstance(ev, RequestDone):
            done = ev
    if req.include_usage():
        body = {**head, "choices": [], "usage": usage(done.prompt_tokens, done.completion_tokens)}
        yield sse(body)
    yield sse("[DONE]")


def _check_n(served: Served, n: int) -> None:
    if n > served.engine.max_batch:
        raise ApiError(
            400,
            f"n={n} exceeds this server's max_batch={served.engine.max_batch} rows; "
            "ask for fewer choices",
            param="n",
        )


def json_response(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body)
