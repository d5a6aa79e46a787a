"""The `Generator`: prefill + decode with the model's cache, for batches of prompts.

- prompts of different lengths are left-padded; the model's `pad_mask` keeps every row exact
- per-step sampling from `sampling.py`; stop token ids, stop strings, repetition penalty, seeds
- streaming: a `DecodeJob` yields (row, text delta) as tokens are decoded (`textstream.py`)
- GPT context: a long prompt is cropped from the left; a full cache is rebuilt from the newest half
Per token the loop does one forward, one sample and one host read of the new ids; the cache is
preallocated and finished rows are dropped from the batch as they accumulate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lmforge.infer.compiled import DecodeStep, compile_decode_step
from lmforge.infer.sampling import (
    apply_repetition_penalty,
    make_generator,
    sample_next,
    seen_tokens,
)
from lmforge.infer.textstream import Decoder, TextStream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationParams:
    """How to continue a prompt. `temperature=0` is greedy (top_k/top_p are then ignored)."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    stop_ids: tuple[int, ...] = ()  # a row ends when it samples one of these (not kept)
    stop: tuple[str, ...] = ()  # a row ends at the first of these strings (text cut before it)
    seed: int | None = None
    use_cache: bool = True  # False recomputes the whole window every step (a reference/baseline)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 is greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k} must be >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty} must be > 0")


@dataclass
class Completion:
    """One generated continuation. `token_ids` exclude a final stop id (that is `stop_id`)."""

    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop_id" | "stop" (a stop string) | "length"
    stop_id: int | None = None
    cropped: int = 0  # prompt tokens dropped from the left to fit the context


@dataclass
class GenerationStats:
    """Timings of one `DecodeJob`, for the CLI's stderr line and the benchmark."""

    rows: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    first_token_s: float = 0.0  # start -> first sampled token (prefill + one sample)
    total_s: float = 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """New tokens after the first, per second of decoding (all rows together)."""
        decode_s = self.total_s - self.first_token_s
        steps = self.new_tokens - self.rows
        return steps / decode_s if decode_s > 0 and steps > 0 else 0.0


def left_pad(
    seqs: Sequence[Sequence[int]], device: torch.device, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids (B, T) left-padded to the longest row, and the pad mask (None when no row is
    padded, so the model takes its plain causal path)."""
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    pad_mask = torch.ones(len(seqs), width, dtype=torch.bool)
    for i, s in enumerate(seqs):
        if s:
            tokens[i, width - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
            pad_mask[i, width - len(s) :] = False
    if not pad_mask.any():
        return tokens.to(device), None
    return tokens.to(device), pad_mask.to(device)


@dataclass
class _Row:
    ids: list[int]  # the (cropped) prompt, then every generated token
    n_prompt: int
    cropped: int
    stream: TextStream | None
    new: list[int] = field(default_factory=list)
    done: bool = False
    reason: str = "length"
    stop_id: int | None = None


class DecodeJob:
    """One batched generation. Iterate it for (row, text delta) events (streaming needs a
    tokenizer); afterwards `completions` and `stats` hold the results."""

    def __init__(
        self,
        model: nn.Module,
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
        tokenizer: Decoder | None = None,
        stream: bool = False,
        step: DecodeStep | None = None,
    ) -> None:
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token (e.g. the eot id)")
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.step = step  # a compiled decode step (`compiled.py`), or None for eager
        self.device = next(model.parameters()).device
        self.context: int | None = model.max_context
        self.rows = [self._make_row(p, stream) for p in prompts]
        self.live = list(range(len(self.rows)))  # row index of each batch row
        self.cache = None
        self.slots = 0  # cache slots used (pads included): the longest row's next position
        self.seen: torch.Tensor | None = None
        self.stop_set = frozenset(params.stop_ids)
        self.rng = make_generator(params.seed, self.device) if params.temperature > 0 else None
        self.stats = GenerationStats(rows=len(self.rows))
        self.completions: list[Completion] = []

    def _make_row(self, prompt: Sequence[int], stream: bool) -> _Row:
        ids = list(prompt)
        cropped = 0
        if self.context is not None and len(ids) > self.context:
            cropped = len(ids) - self.context
            ids = ids[cropped:]
        text_needed = self.tokenizer is not None and (stream or self.params.stop)
        ts = TextStream(self.tokenizer, self.params.stop) if text_needed else None
        return _Row(ids, len(ids), cropped, ts)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        p = self.params
        start = time.perf_counter()
        self.stats.prompt_tokens = sum(r.n_prompt for r in self.rows)
        with torch.inference_mode():
            logits = self._prefill(keep=self.context)
            for step in range(p.max_new_tokens):
                if self.seen is not None:
                    logits = apply_repetition_penalty(logits, self.seen, p.repetition_penalty)
                tokens = sample_next(logits, p.temperature, p.top_k, p.top_p, self.rng)  # (B,)
                if step == 0:
                    self.stats.first_token_s = time.perf_counter() - start
                yield from self._accept(tokens)
                if step == p.max_new_tokens - 1 or all(self.rows[b].done for b in self.live):
                    break
                logits = self._advance(tokens)
        yield from self._finish()
        self.stats.total_s = time.perf_counter() - start

    # -- steps ------------------------------------------------------------------------------------

    def _prefill(self, keep: int | None) -> torch.Tensor:
        """Run the live rows' newest `keep` tokens into a fresh cache; next-token logits (B, V)."""
        seqs = [self.rows[b].ids[-keep:] if keep else self.rows[b].ids for b in self.live]
        tokens, pad_mask = left_pad(seqs, self.device)
        if self.seen is None and self.params.repetition_penalty != 1.0:
            self.seen = seen_tokens(tokens, self.model.vocab_size, pad_mask)
        if not self.params.use_cache:
            return self.model(tokens, pad_mask=pad_mask)[:, -1]
        width = tokens.size(1)
        remaining = self.params.max_new_tokens - max(len(self.rows[b].new) for b in self.live)
        slots = width + remaining
        if self.context is not None:
            slots = max(width + 1, min(slots, self.context))
        self.cache = self.model.init_cache(len(seqs), max_len=slots, device=self.device)
        self.slots = width
        return self.model(tokens, cache=self.cache, pad_mask=pad_mask)[:, -1]  # (B, T, V) -> (B, V)

    def _accept(self, tokens: torch.Tensor) -> Iterator[tuple[int, str]]:
        """Record each live row's new token; yields text deltas of streamed rows."""
        if self.seen is not None:
            self.seen.scatter_(1, tokens[:, None], True)
        for b, tok in zip(self.live, tokens.tolist(), strict=True):
            row = self.rows[b]
            if row.done:
                continue
            if tok in self.stop_set:
                row.done, row.reason, row.stop_id = True, "stop_id", tok
                continue
            row.new.append(tok)
            row.ids.append(tok)
            if row.stream is not None:
                delta = row.stream.push(tok)
                if delta:
                    yield b, delta
                if row.stream.stopped:
                    row.done, row.reason = True, "stop"

    def _advance(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed the sampled tokens; next-token logits (B', V) for the (possibly compacted) batch."""
        tokens = self._compact(tokens)
        if not self.params.use_cache:
            return self._prefill(keep=self.context)
        if self.context is not None and self.slots >= self.context:
            # Context full: rebuild from the newest half, so a rebuild is paid once per
            # context/2 tokens and the model never sees a position it was not trained for.
            return self._prefill(keep=max(1, self.context // 2))
        self.slots += 1
        if self.step is not None:
            return self.step(tokens[:, None], self.cache)
        return self.model(tokens[:, None], cache=self.cache)[:, -1]  # (B, 1, V) -> (B, V)

    def _compact(self, tokens: torch.Tensor) -> torch.Tensor:
        """Drop finished rows once they are a quarter of the batch (a cache copy is not free).
        A compiled step keeps every row: a new batch size would mean a new compile."""
        if self.step is not None:
            return tokens
        keep = [i for i, b in enumerate(self.live) if not self.rows[b].done]
        if 4 * (len(self.live) - len(keep)) < len(self.live):
            return tokens
        index = torch.tensor(keep, device=self.device)
        if self.cache is not None:
            self.cache.reorder_(index)
        if self.seen is not None:
            self.seen = self.seen.index_select(0, index)
        self.live = [self.live[i] for i in keep]
        return tokens.index_select(0, index)

    def _finish(self) -> Iterator[tuple[int, str]]:
        for b, row in enumerate(self.rows):
            text = ""
            if row.stream is not None:
                delta = row.stream.flush()
                if delta:
                    yield b, delta
                text = row.stream.text
            elif self.tokenizer is not None:
                text = self.tokenizer.decode(row.new)
            self.stats.new_tokens += len(row.new) + (row.stop_id is not None)
            self.completions.append(
                Completion(
                    row.ids[: row.n_prompt], row.new, text, row.reason, row.stop_id, row.cropped
                )
            )


class Generator:
    """Generation for one model (and optionally its tokenizer, for text and stop strings).

    `compile=True` compiles the GPT's decode step (`compiled.py`): ~2x faster decoding at
    small batch on a CPU after a one-off compile of tens of seconds (cached on disk).
    """

    def __init__(
        self, model: nn.Module, tokenizer: Decoder | None = None, compile: bool = False
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.step = compile_decode_step(model) if compile else None

    def start(
        self,
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
        num_samples: int = 1,
        stream: bool = False,
    ) -> DecodeJob:
        """A job over every prompt repeated `num_samples` times (prompt-major order)."""
        rows = [list(p) for p in prompts for _ in range(num_samples)]
        job = DecodeJob(self.model, rows, params, self.tokenizer, stream=stream, step=self.step)
        for row in job.rows:
            if row.cropped:
                log.warning(
                    "note: prompt has %d tokens but the model's context is %d; using the last %d",
                    row.n_prompt + row.cropped,
                    job.context,
                    row.n_prompt,
                )
        return job

    def generate(
        self, prompts: Sequence[Sequence[int]], params: GenerationParams, num_samples: int = 1
    ) -> list[Completion]:
        """Continue every prompt (batched); one Completion per prompt and sample."""
        job = self.start(prompts, params, num_samples)
        for _ in job:
            pass
        return job.completions

    def stream(self, prompt_ids: Sequence[int], params: GenerationParams) -> Iterator[str]:
        """Text of one prompt's continuation, piece by piece as it is decoded."""
        if self.tokenizer is None:
            raise ValueError("streaming text needs a tokenizer; pass one to Generator")
        for _, delta in self.start([prompt_ids], params, stream=True):
            yield delta


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt's ids exactly as tokenizer.json encodes it; '' is the end-of-text token (the
    boundary every document in the training data follows)."""
    return tokenizer.encode(prompt) if prompt else [tokenizer.eot_id]
