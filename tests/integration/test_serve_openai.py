"""The official `openai` client against a live `lmforge serve` of a tiny trained GPT.

Completions and chat, streamed and not; greedy streams equal non-streamed text; max_tokens,
stop strings (one spanning two tokens), n, seeds and usage; batching is invisible (8 concurrent
greedy requests each equal their lone result) and real (a short request overtakes a running long
stream); echo + logprobs equal lmforge's likelihood scoring; a disconnect frees its row.
"""

from __future__ import annotations

import asyncio
import time

import httpx2 as httpx
import pytest
from _serve_support import KEY, TEXT, Server, char_tokenizer, train_run
from lmforge_testing import require

try:
    import openai
except ImportError:  # pragma: no cover - the [serve] extra is missing
    openai = None

PROMPTS = ["the quick", "a stitch", "all that", "the early bird", "fox", "lazy dog. a", "t", "gold"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    require(openai is not None, "openai is not installed (pip install -e '.[serve]')")
    # A long context, so that a long stream runs for a while even on a fast machine.
    root = tmp_path_factory.mktemp("serve")
    run = train_run(root / "gpt", "gpt", char_tokenizer(), TEXT, max_seq_len=1024)
    server = Server(run, f"api_key={KEY}", "max_batch=8", "model_name=tiny-gpt")
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def complete(client, prompt: str, **kw):
    kw = {"model": "tiny-gpt", "prompt": prompt, "max_tokens": 24, "temperature": 0, **kw}
    if "ignore_eos" in kw:  # a vLLM-style extension: not a keyword of the SDK
        kw["extra_body"] = {"ignore_eos": kw.pop("ignore_eos")}
    return client.completions.create(**kw)


def stream_text(stream) -> tuple[str, list]:
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    return text, chunks


def test_models_list(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-gpt"]
    assert client.models.retrieve("tiny-gpt").id == "tiny-gpt"


def test_greedy_stream_equals_non_stream_and_stops_at_max_tokens(client, tok):
    whole = complete(client, "the quick")
    choice = whole.choices[0]
    assert choice.finish_reason == "length"
    assert whole.usage.completion_tokens == 24 == len(tok.encode(choice.text))
    assert whole.usage.prompt_tokens == len(tok.encode("the quick"))
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 24
    text, chunks = stream_text(complete(client, "the quick", stream=True))
    assert text == choice.text
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].choices[0].text == ""
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_chat_stream_equals_non_stream_with_usage(client, served):
    messages = [{"role": "user", "content": "the quick"}]
    kw = {"model": "tiny-gpt", "messages": messages, "max_tokens": 20, "temperature": 0}
    whole = client.chat.completions.create(**kw)
    assert whole.choices[0].message.role == "assistant"
    rendered = httpx.post(
        served.url + "/tokenize",
        json={"messages": messages},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    assert rendered["prompt"].endswith("<|im_start|>assistant\n")
    assert whole.usage.prompt_tokens == rendered["count"]
    stream = client.chat.completions.create(
        **kw, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and not chunks[0].choices[0].delta.content
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    )
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].delta.content is None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len({c.id for c in chunks}) == 1


def test_stop_strings_never_appear(client):
    free = complete(client, "the quick", max_tokens=30).choices[0].text
    spanning = free[6:8]  # two characters = two tokens of the char tokenizer
    cut = free.index(spanning)
    for stop in (spanning, [spanning, "zzz"]):
        whole = complete(client, "the quick", max_tokens=30, stop=stop).choices[0]
        assert whole.text == free[:cut] and whole.finish_reason == "stop"
        text, chunks = stream_text(
            complete(client, "the quick", max_tokens=30, stop=stop, stream=True)
        )
        assert text == free[:cut] and spanning not in text
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_n_choices_and_seeds(client):
    three = complete(client, "the", n=3, temperature=1.0, seed=5, max_tokens=16)
    assert sorted(c.index for c in three.choices) == [0, 1, 2]
    assert three.usage.completion_tokens == 48
    again = complete(client, "the", n=3, temperature=1.0, seed=5, max_tokens=16)
    assert [c.text for c in again.choices] == [c.text for c in three.choices]
    other = complete(client, "the", n=3, temperature=1.0, seed=6, max_tokens=16)
    assert [c.text for c in other.choices] != [c.text for c in three.choices]
    two_prompts = complete(client, ["the", "a"], n=2, max_tokens=4)
    assert [c.index for c in two_prompts.choices] == [0, 1, 2, 3]


def test_prompt_as_token_ids(client, tok):
    by_text = complete(client, "the quick").choices[0].text
    by_ids = complete(client, tok.encode("the quick")).choices[0].text
    assert by_ids == by_text


def test_eight_concurrent_greedy_requests_each_equal_their_lone_result(served):
    alone = {}
    sync = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
    for i, p in enumerate(PROMPTS):
        alone[p] = complete(sync, p, max_tokens=20 + 4 * i).choices[0].text

    async def together():
        client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
        calls = [
            client.completions.create(
                model="tiny-gpt", prompt=p, max_tokens=20 + 4 * i, temperature=0
            )
            for i, p in enumerate(PROMPTS)
        ]
        return await asyncio.gather(*calls)

    before = served.metric("lmforge_decode_batch_size_count")
    results = asyncio.run(together())
    assert [r.choices[0].text for r in results] == [alone[p] for p in PROMPTS]
    assert served.metric("lmforge_decode_batch_size_count") > before


def test_a_short_request_overtakes_a_running_long_stream(client, served):
    """A first-in-first-out server fails this: the short request would wait for the long one."""

    def shared_steps() -> float:  # decode steps that ran two or more rows
        total = served.metric("lmforge_decode_batch_size_count")
        return total - served.metric('lmforge_decode_batch_size_bucket{le="1"}')

    before = shared_steps()
    long = complete(client, "the", max_tokens=1000, stream=True, ignore_eos=True)
    chunks_after_short = None
    for i, _chunk in enumerate(long):
        if i == 4:  # after the stream's 5th chunk
            short = complete(client, "fox", max_tokens=4)
            assert short.choices[0].finish_reason == "length"
            assert served.health()["active_rows"] >= 1  # the long stream is still decoding
            chunks_after_short = 0
        elif chunks_after_short is not None:
            chunks_after_short += 1
    assert chunks_after_short is not None and chunks_after_short > 500
    assert shared_steps() - before >= 3, "the two requests never shared a decode batch"


def test_logprobs_and_echo_scores_equal_likelihood(client, served, tok):
    from lmforge.eval.likelihood import loglikelihood
    from lmforge.run.rundir import load_run

    prompt = "the lazy dog"
    echoed = complete(client, prompt, max_tokens=0, echo=True, logprobs=3)
    lp = echoed.choices[0].logprobs
    ids = tok.encode(prompt)
    assert echoed.choices[0].text == prompt
    assert lp.tokens == list(prompt) and lp.token_logprobs[0] is None
    assert lp.text_offset == list(range(len(prompt)))
    model = load_run(served_run_dir(served)).model
    for i in range(1, len(ids)):
        expected, _ = loglikelihood(model, [(ids[:i], ids[i : i + 1])])[0]
        assert abs(lp.token_logprobs[i] - expected) < 1e-5
        assert len(lp.top_logprobs[i]) == 3
    generated = complete(client, prompt, max_tokens=5, logprobs=2)
    glp = generated.choices[0].logprobs
    assert "".join(glp.tokens) == generated.choices[0].text
    assert all(len(t) == 2 for t in glp.top_logprobs)
    assert all(
        max(t.values()) >= v - 1e-6
        for t, v in zip(glp.top_logprobs, glp.token_logprobs, strict=True)
    )


def test_chat_logprobs(client):
    out = client.chat.completions.create(
        model="tiny-gpt",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = out.choices[0].logprobs.content
    assert "".join(c.token for c in content) == out.choices[0].message.content
    assert all(
        len(c.top_logprobs) == 2 and c.top_logprobs[0].logprob >= c.logprob - 1e-6 for c in content
    )
    assert all(bytes(c.bytes).decode() == c.token for c in content)


def test_a_disconnected_stream_frees_its_row(client, served):
    stream = complete(client, "the", max_tokens=200, stream=True, ignore_eos=True)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    deadline = time.monotonic() + 5
    while served.health()["active_rows"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.health()["active_rows"] == 0


def test_tokenize_and_detokenize(served, tok):
    auth = {"Authorization": f"Bearer {KEY}"}
    out = httpx.post(served.url + "/tokenize", json={"prompt": "the fox"}, headers=auth).json()
    assert out["tokens"] == tok.encode("the fox") and out["count"] == 7
    back = httpx.post(served.url + "/detokenize", json={"tokens": out["tokens"]}, headers=auth)
    assert back.json()["prompt"] == "the fox"


def served_run_dir(server: Server):
    return server.proc.args[4]


def test_a_client_leaving_a_non_streamed_request_cancels_it(served):
    def cancelled() -> float:
        text = httpx.get(served.url + "/metrics").text
        found = [ln for ln in text.splitlines() if 'status="cancelled"' in ln]
        return float(found[0].split()[-1]) if found else 0.0

    before = cancelled()
    body = {"model": "tiny-gpt", "prompt": "the", "max_tokens": 1000, "n": 4, "ignore_eos": True}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            served.url + "/v1/completions",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=0.1,
        )
    deadline = time.monotonic() + 5
    while cancelled() == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cancelled() == before + 1
    assert served.health()["active_rows"] == 0
