"""The continuous-batching engine on tiny models: batching never changes what a request gets.

Greedy rows equal lmforge's own Generator, whatever joins or leaves the batch; seeded rows are
repeatable across batch compositions; stop strings and stop ids end rows; n choices; echo scores
equal the likelihood scorer; a cancelled request frees its row. GPT (KV rows) and LSTM (states).
"""

from __future__ import annotations

import threading

import pytest
import torch

from lmforge.data.tokenizer import build_char
from lmforge.eval.likelihood import loglikelihood
from lmforge.infer.generator import GenerationParams, Generator
from lmforge.infer.inference_model import prepare_for_decoding
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.serve.engine import (
    ChoiceFinished,
    Engine,
    GenerationRequest,
    PromptScored,
    QueueFull,
    RequestDone,
    TextDelta,
)
from lmforge.serve.sampling import RowSampling, filter_logits

TEXT = "the quick brown fox jumps over the lazy dog. "


@pytest.fixture(scope="module")
def tokenizer():
    return build_char([TEXT], ["<|endoftext|>"])


def make_model(kind: str, vocab: int, max_seq_len: int = 48):
    torch.manual_seed(0)
    if kind == "gpt":
        cfg = GPTConfig(n_layers=2, n_heads=2, d_model=32, max_seq_len=max_seq_len, init_std=0.3)
    else:
        cfg = LSTMConfig(n_layers=2, d_model=16, d_hidden=32, init_range=0.5)
    return build_model(cfg, vocab).eval()


class Collector:
    """A request's events, and an Event set when its RequestDone arrives."""

    def __init__(self) -> None:
        self.events: list = []
        self.done = threading.Event()

    def __call__(self, event) -> None:
        self.events.append(event)
        if isinstance(event, RequestDone):
            self.done.set()

    def texts(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for e in self.events:
            if isinstance(e, TextDelta | ChoiceFinished):
                out[e.choice] = out.get(e.choice, "") + e.text
        return out

    def finished(self) -> dict[int, ChoiceFinished]:
        return {e.choice: e for e in self.events if isinstance(e, ChoiceFinished)}


def run_all(engine: Engine, requests: list[GenerationRequest]) -> None:
    for r in requests:
        engine.submit(r)
    for r in requests:
        assert r.sink.done.wait(60), "request did not finish"


def wait_idle(engine: Engine) -> None:
    """Rows leave right after their last event is sent, so wait for the step to finish."""
    for _ in range(500):
        if engine.active_rows == 0 and engine.queue_depth == 0:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{engine.active_rows} rows still active")


def request(tokenizer, prompt: str, max_tokens: int = 12, **kw) -> GenerationRequest:
    return GenerationRequest(tokenizer.encode(prompt), max_tokens, Collector(), **kw)


PROMPTS = ["the", "a lazy dog jumps", "quick", "over the brown fox and", "t", "dog. the qu"]


@pytest.fixture(params=["gpt", "lstm"])
def engine(request, tokenizer):
    model = prepare_for_decoding(make_model(request.param, tokenizer.vocab_size))
    eng = Engine(model, tokenizer, max_batch=4, max_queue=16)
    eng.start()
    yield eng
    eng.stop()


def test_greedy_rows_equal_the_generator_whatever_shares_the_batch(engine, tokenizer):
    reqs = [request(tokenizer, p, max_tokens=10 + 3 * i) for i, p in enumerate(PROMPTS)]
    run_all(engine, reqs)  # 6 requests, 4 rows: two join when others leave
    gen = Generator(engine.model, tokenizer)
    for i, (p, r) in enumerate(zip(PROMPTS, reqs, strict=True)):
        params = GenerationParams(max_new_tokens=10 + 3 * i, temperature=0.0)
        expected = gen.generate([tokenizer.encode(p)], params)[0].text
        assert r.sink.texts() == {0: expected}
        assert r.sink.finished()[0].reason == "length"
        done = r.sink.events[-1]
        assert done == RequestDone(len(tokenizer.encode(p)), 10 + 3 * i)
    wait_idle(engine)


def test_seeded_sampling_is_repeatable_across_batches_and_seeds_differ(engine, tokenizer):
    sampling = RowSampling(temperature=1.0, top_p=0.95, top_k=20)
    alone = request(tokenizer, "the", 20, sampling=sampling, seed=7)
    run_all(engine, [alone])
    crowd = [request(tokenizer, p, 20, sampling=sampling, seed=7 + (p != "the")) for p in PROMPTS]
    run_all(engine, crowd)
    assert crowd[0].sink.texts() == alone.sink.texts()
    other = request(tokenizer, "the", 20, sampling=sampling, seed=8)
    run_all(engine, [other])
    assert other.sink.texts() != alone.sink.texts()


def test_n_choices_differ_and_are_each_seeded(engine, tokenizer):
    sampling = RowSampling(temperature=1.0)
    a = request(tokenizer, "the", 16, sampling=sampling, seed=3, n=3)
    b = request(tokenizer, "the", 16, sampling=sampling, seed=3, n=3)
    run_all(engine, [a, b])
    assert a.sink.texts() == b.sink.texts()
    assert len(set(a.sink.texts().values())) == 3


def test_stop_strings_spanning_tokens_end_the_text_before_them(engine, tokenizer):
    free = request(tokenizer, "the", 24)
    run_all(engine, [free])
    text = free.sink.texts()[0]
    stop = text[5:7]  # two characters: two tokens of the char tokenizer
    cut = text.index(stop)
    stopped = request(tokenizer, "the", 24, stop=(stop, "never seen"))
    run_all(engine, [stopped])
    assert stopped.sink.texts() == {0: text[:cut]}
    assert stopped.sink.finished()[0].reason == "stop"


def test_stop_id_ends_a_row_and_counts_as_a_completion_token(engine, tokenizer):
    free = request(tokenizer, "the", 8)
    run_all(engine, [free])
    text = free.sink.texts()[0]
    cut = text.index(text[3])  # the first occurrence of the 4th character
    stopped = request(tokenizer, "the", 8, stop_ids=tuple(tokenizer.encode(text[3])))
    run_all(engine, [stopped])
    assert stopped.sink.texts() == {0: text[:cut]}
    assert stopped.sink.finished()[0].reason == "stop"
    assert stopped.sink.events[-1].completion_tokens == cut + 1


def test_echo_scores_equal_the_likelihood_scorer(engine, tokenizer):
    ids = tokenizer.encode("the lazy dog jumps")
    r = GenerationRequest(ids, 0, Collector(), logprobs=2, prompt_logprobs=True)
    run_all(engine, [r])
    scored = next(e for e in r.sink.events if isinstance(e, PromptScored)).tokens
    assert [t.id for t in scored] == ids and scored[0].logprob is None
    for i in (1, 5, len(ids) - 1):
        expected, _ = loglikelihood(engine.model, [(ids[:i], ids[i : i + 1])])[0]
        assert abs(scored[i].logprob - expected) < 1e-5
        assert len(scored[i].top) == 2 and scored[i].top[0][1] >= scored[i].logprob - 1e-6
    assert r.sink.finished()[0].completion_tokens == 0


def test_a_cancelled_request_frees_its_row(engine, tokenizer):
    long = request(tokenizer, "the", 10_000 if engine.context is None else 40)
    engine.submit(long)
    while not any(isinstance(e, TextDelta) for e in long.sink.events):
        threading.Event().wait(0.005)
    long.cancel()
    short = request(tokenizer, "a", 3)
    run_all(engine, [short])
    wait_idle(engine)
    assert not long.sink.done.is_set()


def test_rows_stop_at_the_gpt_context(tokenizer):
    model = make_model("gpt", tokenizer.vocab_size, max_seq_len=16)
    eng = Engine(model, tokenizer, max_batch=2)
    eng.start()
    try:
        r = request(tokenizer, "the quick", 100)
        run_all(eng, [r])
    finally:
        eng.stop()
    assert r.sink.finished()[0].reason == "length"
    assert r.sink.events[-1].completion_tokens == 16 - len("the quick")


def test_a_full_queue_refuses(tokenizer):
    eng = Engine(make_model("gpt", tokenizer.vocab_size), tokenizer, max_batch=1, max_queue=2)
    eng.submit(request(tokenizer, "a"))  # not started: everything waits
    eng.submit(request(tokenizer, "b"))
    with pytest.raises(QueueFull):
        eng.submit(request(tokenizer, "c"))


def test_per_row_filters_match_single_row_filters():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    rows = [RowSampling(0.7, 1.0, 5), RowSampling(1.3, 0.6, 0), RowSampling(1.0, 1.0, 0)]
    batched = filter_logits(logits, rows)
    from lmforge.infer.sampling import apply_top_k, apply_top_p

    expected = [
        apply_top_k(logits[0:1] / 0.7, 5),
        apply_top_p(logits[1:2] / 1.3, 0.6),
        logits[2:3],
    ]
    # The same distributions (batched logits are shifted by each row's max, which changes none).
    torch.testing.assert_close(batched.softmax(-1), torch.cat(expected).softmax(-1))
    assert torch.equal(torch.isinf(batched), torch.isinf(torch.cat(expected)))


def test_a_tiny_temperature_or_top_p_samples_the_argmax_instead_of_nan():
    logits = torch.tensor([[3.0, 1.0, -2.0], [0.0, 5.0, 4.999]])
    rows = [RowSampling(1e-30, 1.0, 0), RowSampling(1.0, 5e-324, 2)]
    gens = [torch.Generator().manual_seed(0) for _ in rows]
    from lmforge.serve.sampling import sample_rows

    assert sample_rows(logits, rows, gens) == [0, 1]


def test_a_failing_step_fails_its_batch_and_the_engine_keeps_serving(tokenizer):
    model = make_model("gpt", tokenizer.vocab_size)
    calls = {"n": 0}

    def step_that_fails_once(tokens, cache):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in a decode step")
        return model(tokens, cache=cache)[:, -1]

    eng = Engine(model, tokenizer, max_batch=2, decode_step=step_that_fails_once)
    eng.start()
    try:
        first = request(tokenizer, "the", 5)
        run_all(eng, [first])
        assert first.sink.events[-1] == RequestDone(-1, -1)
        second = request(tokenizer, "the", 5)
        run_all(eng, [second])
        assert second.sink.finished()[0].reason == "length"
        wait_idle(eng)
    finally:
        eng.stop()
