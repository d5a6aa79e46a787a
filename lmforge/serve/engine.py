"""The serving engine: one thread owns the model and decodes every active request as one batch.

Iteration-level scheduling (Orca; vLLM, TGI and llama.cpp's parallel slots do the same): before
each decode step, waiting requests are prefilled one by one into a 1-row cache and join the batch
(`cache.add_rows_`), so a new request starts at the next step instead of after the running ones;
a finished or cancelled row leaves at once (`cache.reorder_`), and the freed slots are trimmed.
Every row samples with its own settings and seeded generator (`sampling.py`), so batching never
changes what a request gets. Results go back through each request's `sink`, called on the engine
thread (the HTTP layer hands them to its event loop). GPT rows are KV-cache rows, LSTM rows are
state rows: the engine only uses the calls both caches share.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.infer.textstream import TextStream
from lmforge.serve.metrics import Metrics
from lmforge.serve.sampling import RowSampling, make_row_generator, sample_rows

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The waiting queue holds `max_queue` requests; the client should retry later."""


@dataclass(frozen=True)
class TokenInfo:
    """One token with its log-probability and the top alternatives (id, logprob), best first."""

    id: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class PromptScored:
    """The prompt's own tokens with their log-probabilities (the first has none): echo."""

    tokens: list[TokenInfo]


@dataclass(frozen=True)
class TextDelta:
    """New text of one choice (possibly empty) and the tokens decoded since the last delta."""

    choice: int
    text: str
    tokens: list[TokenInfo]


@dataclass(frozen=True)
class ChoiceFinished:
    """A choice ended: `stop` (end-of-text or a stop string) or `length` (max_tokens or the
    context). `text` is the last delta (held-back text released at the end)."""

    choice: int
    reason: str
    text: str
    tokens: list[TokenInfo]
    completion_tokens: int


@dataclass(frozen=True)
class RequestDone:
    prompt_tokens: int
    completion_tokens: int


Event = PromptScored | TextDelta | ChoiceFinished | RequestDone


@dataclass
class GenerationRequest:
    """What to generate. `max_tokens` counts new tokens (the caller has checked the context);
    `logprobs` is the number of alternatives per generated token (None: no logprobs);
    `prompt_logprobs` asks for the prompt's own scores (echo). `sink` receives the events."""

    prompt_ids: list[int]
    max_tokens: int
    sink: Callable[[Event], None]
    sampling: RowSampling = RowSampling(temperature=0.0)  # greedy unless told
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_ids: tuple[int, ...] = ()
    logprobs: int | None = None
    prompt_logprobs: bool = False
    arrived: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # set from any thread; the engine drops the request within a step

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Row:
    """One choice of one request, decoding in the batch."""

    request: GenerationRequest
    choice: int
    generator: torch.Generator | None
    stream: TextStream
    last: int = 0
    generated: int = 0  # tokens sampled, a final stop token included
    pending: list[TokenInfo] = field(default_factory=list)
    done: bool = False


@dataclass
class _Progress:
    """Per-request bookkeeping across its choices."""

    open_choices: int
    completion_tokens: int = 0
    first_token: bool = False


class Engine:
    """Continuous batching over one model. `start()` runs the loop on a daemon thread."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        max_batch: int = 8,
        max_queue: int = 64,
        metrics: Metrics | None = None,
        decode_step: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.metrics = metrics or Metrics()
        self.context: int | None = model.max_context
        self.device = next(model.parameters()).device
        self.decode_step = decode_step
        self._waiting: deque[GenerationRequest] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._rows: list[_Row] = []
        self._progress: dict[int, _Progress] = {}
        self._cache = self._empty_cache()
        self.failure: BaseException | None = None

    # -- public, any thread -----------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def active_rows(self) -> int:
        return len(self._rows)

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request; raises QueueFull when `max_queue` requests already wait."""
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting")
            self._waiting.append(request)
            self.metrics.queue_depth = len(self._waiting)
            self._cond.notify()

    def warm_up(self) -> None:
        """Run every batch size 1..max_batch through a decode step, with aligned rows and with
        rows of different lengths (the cache's two layouts), before serving: a compiled decode
        step then compiles here, at start-up, never while a client waits. Call before `start`."""
        eot = self.tokenizer.eot_id
        with torch.inference_mode():
            for rows in range(1, self.max_batch + 1):
                for ragged in (False, True):
                    for i in range(rows):
                        prompt = [eot] * (2 + (i % 2 if ragged else 0))
                        self._waiting.append(GenerationRequest(prompt, 2, lambda event: None))
                    while self._waiting or self._rows:
                        self._admit()
                        if self._rows:
                            self._step()
        self.metrics.reset()  # the warm-up is not traffic

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lmforge-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel whatever is left and end the loop."""
        with self._cond:
            self._stopping = True
            for req in self._waiting:
                req.cancel()
            for row in self._rows:
                row.request.cancel()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the loop (engine thread) -----------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                try:
                    if not self._next_iteration():
                        return
                except Exception as exc:  # a bug, not a client mistake: fail loudly, keep serving
                    log.exception("engine step failed; failing the requests in the batch")
                    self.failure = exc
                    self._fail_running()

    def _fail_running(self) -> None:
        """Answer every request in the batch with a failure and start from an empty batch."""
        requests = {id(r.request): r.request for r in self._rows}
        self._rows = []
        self._progress.clear()
        self._cache = self._empty_cache()
        for req in requests.values():
            self.metrics.count_request("500")
            req.sink(RequestDone(-1, -1))

    def _next_iteration(self) -> bool:
        with self._cond:
            while not self._waiting and not self._rows and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return False
        self._drop_cancelled()
        self._admit()
        if self._rows:
            self._step()
        return True

    def _admit(self) -> None:
        """Prefill waiting requests (first come, first served) while their choices fit."""
        while True:
            with self._cond:
                if not self._waiting or len(self._rows) + self._waiting[0].n > self.max_batch:
                    return
                req = self._waiting.popleft()
                self.metrics.queue_depth = len(self._waiting)
            if req.cancelled:
                continue
            try:
                self._prefill(req)
            except Exception:  # a bug, not a client mistake: answer it, keep serving the rest
                log.exception("prefill failed")
                self._progress.pop(id(req), None)
                self.metrics.count_request("500")
                req.sink(RequestDone(-1, -1))

    def _prefill(self, req: GenerationRequest) -> None:
        model, P = self.model, len(req.prompt_ids)
        self.metrics.prompt_tokens += P
        ids = torch.tensor([req.prompt_ids], dtype=torch.long, device=self.device)
        single = model.init_cache(1, max_len=P)
        keep = 0 if req.prompt_logprobs else 1
        logits = model(ids, cache=single, logits_to_keep=keep)[0]  # (P or 1, V)
        if req.prompt_logprobs:
            req.sink(PromptScored(self._prompt_scores(req, logits)))
        self._progress[id(req)] = _Progress(open_choices=req.n)
        rows = [self._new_row(req, j) for j in range(req.n)]
        if req.max_tokens == 0:  # echo scoring only
            for row in rows:
                self._finish(row, "length")
            return
        last = logits[-1:].expand(req.n, -1)  # (n, V)
        tokens = sample_rows(last, [req.sampling] * req.n, [r.generator for r in rows])
        infos = self._token_infos(last, tokens, [req] * req.n)
        for row, tok, info in zip(rows, tokens, infos, strict=True):
            self._accept(row, tok, info)
            if not row.done:
                self._cache.add_rows_(single)
                self._rows.append(row)

    def _new_row(self, req: GenerationRequest, choice: int) -> _Row:
        seed = None if req.seed is None else req.seed + choice
        gen = None if req.sampling.greedy else make_row_generator(seed, self.device)
        return _Row(req, choice, gen, TextStream(self.tokenizer, req.stop))

    def _step(self) -> None:
        """One decode step: every active row advances one token."""
        cache = self._cache
        if self.context is not None and cache.length >= cache.max_len:
            cache.trim_()  # rows end at the context, so trimming always frees slots
        tokens = torch.tensor([[r.last] for r in self._rows], dtype=torch.long, device=self.device)
        if self.decode_step is not None:
            logits = self.decode_step(tokens, cache)
        else:
            logits = self.model(tokens, cache=cache)[:, -1]  # (B, 1, V) -> (B, V)
        self.metrics.observe_batch(len(self._rows))
        requests = [r.request for r in self._rows]
        ids = sample_rows(logits, [q.sampling for q in requests], [r.generator for r in self._rows])
        infos = self._token_infos(logits, ids, requests)
        for row, tok, info in zip(self._rows, ids, infos, strict=True):
            self._accept(row, tok, info)
        self._remove_done()

    def _accept(self, row: _Row, token: int, info: TokenInfo | None) -> None:
        req = row.request
        row.generated += 1
        self.metrics.generated_tokens += 1
        progress = self._progress[id(req)]
        if not progress.first_token:
            progress.first_token = True
            self.metrics.observe_ttft(time.perf_counter() - req.arrived)
        if info is not None:
            row.pending.append(info)
        if token in req.stop_ids:
            self._finish(row, "stop")
            return
        row.last = token
        delta = row.stream.push(token)
        if row.stream.stopped:
            self._finish(row, "stop", delta)
            return
        n_tokens = len(req.prompt_ids) + row.generated
        if row.generated >= req.max_tokens or (self.context and n_tokens >= self.context):
            self._finish(row, "length", delta)
            return
        if delta or row.pending:
            req.sink(TextDelta(row.choice, delta, row.pending))
            row.pending = []

    def _finish(self, row: _Row, reason: str, delta: str = "") -> None:
        row.done = True
        req = row.request
        tail = row.stream.flush()
        # A row cut by max_tokens in the middle of a UTF-8 character leaves undecodable bytes,
        # which decode to U+FFFD; a partial character is not text, so it is not returned.
        text = delta + tail.rstrip("\ufffd")
        req.sink(ChoiceFinished(row.choice, reason, text, row.pending, row.generated))
        row.pending = []
        progress = self._progress[id(req)]
        progress.completion_tokens += row.generated
        progress.open_choices -= 1
        if progress.open_choices == 0:
            del self._progress[id(req)]
            self.metrics.count_request("ok")
            req.sink(RequestDone(len(req.prompt_ids), progress.completion_tokens))

    def _remove_done(self) -> None:
        done = [i for i, r in enumerate(self._rows) if r.done]
        if not done:
            return
        order = self._cache.remove_rows_(done)  # moves the last rows into the holes
        self._cache.trim_()
        self._rows = [self._rows[i] for i in order]

    def _drop_cancelled(self) -> None:
        """Rows of cancelled requests (a client went away) leave before the next step."""
        cancelled = [r for r in self._rows if r.request.cancelled]
        for row in cancelled:
            row.done = True
            self._progress.pop(id(row.request), None)
        if cancelled:
            self._remove_done()
            self.metrics.count_request("cancelled", len({id(r.request) for r in cancelled}))

    # -- helpers ----------------------------------------------------------------------------------

    def _empty_cache(self) -> Any:
        # Twice the context in slots: rows end at the context, so after a trim at least half the
        # slots are free again (a trim copies the used slots, so it should be rare).
        slots = 2 * self.context if self.context is not None else None
        cache = self.model.init_cache(self.max_batch, max_len=slots)
        cache.remove_rows_(list(range(self.max_batch)))  # 0 rows, storage for max_batch kept
        return cache

    def _token_infos(
        self, logits: torch.Tensor, tokens: list[int], requests: list[GenerationRequest]
    ) -> list[TokenInfo | None]:
        """Log-probabilities (of the model, before temperature and filters) for rows that asked."""
        if all(q.logprobs is None for q in requests):
            return [None] * len(tokens)
        logp = F.log_softmax(logits.float(), dim=-1)  # (B, V)
        out: list[TokenInfo | None] = []
        for b, (tok, q) in enumerate(zip(tokens, requests, strict=True)):
            if q.logprobs is None:
                out.append(None)
                continue
            out.append(TokenInfo(tok, float(logp[b, tok]), _top(logp[b], q.logprobs)))
        return out

    def _prompt_scores(self, req: GenerationRequest, logits: torch.Tensor) -> list[TokenInfo]:
        ids = req.prompt_ids
        logp = F.log_softmax(logits[:-1].float(), dim=-1)  # (P-1, V): predicts ids[1:]
        target = torch.tensor(ids[1:], dtype=torch.long, device=logp.device)
        chosen = logp.gather(1, target[:, None])[:, 0].tolist() if len(ids) > 1 else []
        k = req.logprobs or 0
        infos = [TokenInfo(ids[0], None)]
        for i, tok in enumerate(ids[1:]):
            infos.append(TokenInfo(tok, chosen[i], _top(logp[i], k)))
        return infos


def _top(logp: torch.Tensor, k: int) -> tuple[tuple[int, float], ...]:
    if k <= 0:
        return ()
    values, idx = torch.topk(logp, min(k, logp.size(-1)))
    return tuple(zip(idx.tolist(), values.tolist(), strict=True))
