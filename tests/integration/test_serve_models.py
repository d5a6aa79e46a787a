"""`lmforge serve` on every kind of run: an LSTM (state rows), an imported Hugging Face Llama,
and a GPT over a byte-level tokenizer writing Chinese and emoji (streams never carry U+FFFD).
Plus a bounded load test on the GPT: 64 requests from 16 concurrent clients, some of which hang
up mid-stream; every finished response is what it is alone and no row is left behind.
"""

from __future__ import annotations

import asyncio

import pytest
from _serve_support import TEXT, TEXT_ZH, Server, byte_run, char_tokenizer, imported_run, train_run
from lmforge_testing import require

try:
    import openai
except ImportError:  # pragma: no cover - the [serve] extra is missing
    openai = None


def _client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


@pytest.fixture(scope="module", params=["lstm", "imported"])
def served(request, tmp_path_factory):
    require(openai is not None, "openai is not installed (pip install -e '.[serve]')")
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "lstm":
        run = train_run(root / "lstm", "lstm", char_tokenizer(), TEXT)
    else:
        run = imported_run(root)
    server = Server(run, "max_batch=4", "model_name=m")
    yield server
    assert server.stop() == 0


def test_completions_chat_and_batching(served):
    client = _client(served)
    assert [m.id for m in client.models.list().data] == ["m"]
    kw = {"model": "m", "max_tokens": 12, "temperature": 0}
    whole = client.completions.create(prompt="the quick", **kw)
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 12
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(prompt="the quick", stream=True, **kw)
    )
    assert streamed == whole.choices[0].text
    chat = client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], **kw)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens >= 1
    prompts = ["the", "a stitch in", "all", "gold is"]
    alone = [client.completions.create(prompt=p, **kw).choices[0].text for p in prompts]

    async def together():
        aclient = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="none", max_retries=0)
        calls = [aclient.completions.create(prompt=p, **kw) for p in prompts]
        return [r.choices[0].text for r in await asyncio.gather(*calls)]

    assert asyncio.run(together()) == alone
    seeded = {"model": "m", "max_tokens": 12, "temperature": 1.0, "n": 2, "seed": 3}
    a = client.completions.create(prompt="the", **seeded)
    b = client.completions.create(prompt="the", **seeded)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]


def test_byte_level_streams_never_split_a_character(tmp_path_factory):
    require(openai is not None, "openai is not installed (pip install -e '.[serve]')")
    server = Server(byte_run(tmp_path_factory.mktemp("bytes") / "zh"), "model_name=m")
    try:
        client = _client(server)
        kw = {"model": "m", "max_tokens": 40, "temperature": 0}
        whole = client.completions.create(prompt="你好", **kw).choices[0].text
        assert "\ufffd" not in whole and any(ch in whole for ch in TEXT_ZH if ord(ch) > 0x2E80)
        chunks = [
            c.choices[0].text for c in client.completions.create(prompt="你好", stream=True, **kw)
        ]
        assert all("\ufffd" not in c for c in chunks) and "".join(chunks) == whole
        chat = client.chat.completions.create(
            messages=[{"role": "user", "content": "🙂"}], stream=True, **kw
        )
        deltas = [c.choices[0].delta.content or "" for c in chat if c.choices]
        assert all("\ufffd" not in d for d in deltas)
    finally:
        assert server.stop() == 0


def test_bounded_load_with_hangups(tmp_path_factory):
    """64 requests, 16 at a time; every 4th streams and hangs up after 3 chunks."""
    require(openai is not None, "openai is not installed (pip install -e '.[serve]')")
    run = train_run(tmp_path_factory.mktemp("load") / "gpt", "gpt", char_tokenizer(), TEXT)
    server = Server(run, "max_batch=8", "model_name=m")
    words = TEXT.split()
    prompts = [" ".join(words[i % 20 : i % 20 + 1 + i % 3]) for i in range(64)]
    kw = {"model": "m", "temperature": 0}
    try:
        client = _client(server)
        expected = {
            p: client.completions.create(prompt=p, max_tokens=10 + len(p) % 7, **kw).choices[0].text
            for p in set(prompts)
        }

        async def one(aclient, sem, i, p):
            async with sem:
                if i % 4 == 3:
                    stream = await aclient.completions.create(
                        prompt=p, max_tokens=100, stream=True, **kw
                    )
                    n = 0
                    async for _ in stream:
                        n += 1
                        if n == 3:
                            break
                    await stream.close()
                    return None
                r = await aclient.completions.create(prompt=p, max_tokens=10 + len(p) % 7, **kw)
                return r.choices[0].text

        async def load():
            aclient = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
            sem = asyncio.Semaphore(16)
            return await asyncio.gather(*(one(aclient, sem, i, p) for i, p in enumerate(prompts)))

        results = asyncio.run(load())
        for i, (p, text) in enumerate(zip(prompts, results, strict=True)):
            if i % 4 != 3:
                assert text == expected[p], p
        for _ in range(200):
            if server.health()["active_rows"] == 0:
                break
            asyncio.run(asyncio.sleep(0.01))
        assert server.health() == {"status": "ok", "queue_depth": 0, "active_rows": 0}
    finally:
        assert server.stop() == 0


def test_a_lora_run_serves_what_generate_gives(tmp_path_factory):
    """A LoRA fine-tuning's run dir (adapter + the path of its base) is servable: the server
    loads it merged, and a greedy completion equals the Generator's on the same merged model."""
    require(openai is not None, "openai is not installed (pip install -e '.[serve]')")
    import json

    import torch

    from lmforge.finetune import finetune
    from lmforge.finetune.config import FinetuneConfig
    from lmforge.infer.generator import GenerationParams, Generator
    from lmforge.infer.inference_model import prepare_for_decoding
    from lmforge.run.rundir import load_run
    from lmforge.verb import Flags

    root = tmp_path_factory.mktemp("lora")
    base = train_run(root / "base", "gpt", char_tokenizer(), TEXT, steps=60)
    rows = [
        {"prompt": "the quick ", "response": "brown fox"},
        {"prompt": "a ", "response": "stitch"},
    ]
    data = root / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 8))
    task = {"name": "sft_jsonl", "train": str(data), "test": str(data)}
    sft = {"max_steps": 20, "batch_size": 4, "eval_every": 10, "eval_batches": 1, "lr": 1e-2}
    cfg = FinetuneConfig(
        init=str(base), out=str(root / "lora"), task=task, device="cpu", threads=1,
        sft={**sft, "eval_limit": 2}, lora={"rank": 4, "targets": "all-linear"},
    )  # fmt: skip
    assert finetune(cfg, Flags()) == 0
    run = root / "lora"
    assert any(run.rglob("adapter.safetensors")), "not a LoRA run dir"
    loaded = load_run(run)
    base_weights = load_run(base).model.state_dict()
    merged = loaded.model.state_dict()
    assert any(not torch.equal(merged[k], base_weights[k]) for k in base_weights)  # adapted
    ids = loaded.tokenizer.encode("the quick ")
    params = GenerationParams(max_new_tokens=10, temperature=0.0)
    served_as = prepare_for_decoding(loaded.model)  # as `lmforge serve` lays out the weights
    [expected] = Generator(served_as, loaded.tokenizer).generate([ids], params)
    server = Server(run, "model_name=m")
    try:
        got = _client(server).completions.create(
            model="m",
            prompt="the quick ",
            max_tokens=10,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        assert got.choices[0].text == expected.text and got.usage.completion_tokens == 10
    finally:
        assert server.stop() == 0
