"""Chat end to end: fine-tune on conversations (loss on assistant turns only), answer them back,
store the template in the run, and export it so `transformers` renders the same token ids."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from lmforge.data.tokenizer import EOT, build_char
from lmforge.errors import DataError
from lmforge.eval.config import TaskSection
from lmforge.eval.tasks.chat import ChatTask, read_conversations
from lmforge.finetune import finetune
from lmforge.finetune.config import FinetuneConfig
from lmforge.models import GPTConfig, build_model
from lmforge.run.rundir import create_run_dir, load_run
from lmforge.run.tokenizer_config import (
    DEFAULT_CHAT_TEMPLATE,
    END_OF_TURN,
    load_chat_template,
    read_tokenizer_config,
)
from lmforge.verb import Flags

NAMES = ["ada", "bob", "cyd", "dee", "eve", "fay", "gus", "hal", "ida", "jo"]
COLOURS = ["red", "blue", "green", "gold", "grey"]


def _conversations(n: int, seed: int = 0) -> list[dict]:
    """Synthetic chats: a fixed system line, a question naming a pet, a reply that repeats the
    pet's name and gives the colour its name's kind has (a rule the model can learn)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name = rng.choice(NAMES)
        pet = f"{name}{i}"
        colour = COLOURS[NAMES.index(name) % len(COLOURS)]
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": f"colour of {pet}?"},
                    {"role": "assistant", "content": f"{pet} is {colour}."},
                ]
            }
        )
    return rows


def _base_run(path: Path, texts: list[str]) -> Path:
    tokenizer = build_char([*texts, "\n"], [EOT])
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=2, n_heads=4, d_model=96, max_seq_len=160)
    return create_run_dir(path, build_model(cfg, tokenizer.vocab_size), cfg, tokenizer)


@pytest.mark.slow
def test_chat_sft_learns_its_replies_and_keeps_its_template(tmp_path: Path) -> None:
    conversations = _conversations(50)
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in conversations))
    rendered = [DEFAULT_CHAT_TEMPLATE] + [json.dumps(c) for c in conversations]
    init = _base_run(tmp_path / "base", rendered + ["<|im_start|><|im_end|>system user assistant"])
    out = tmp_path / "chat"
    task = {"name": "chat", "train": str(data), "dev": str(data), "test": str(data)}
    cfg = FinetuneConfig(
        init=str(init),
        out=str(out),
        task=task,
        device="cpu",
        threads=1,
        sft={"lr": 3e-3, "batch_size": 25, "max_steps": 300, "eval_every": 100, "warmup_steps": 10},
        decode={"beam_size": 1, "batch_size": 25},
    )
    assert finetune(cfg, Flags()) == 0
    report = json.loads((out / "eval" / "chat.json").read_text())
    assert report["examples"] == 50
    assert report["exact_match_greedy"] >= 90.0, report
    # The run carries the template it was trained with, so the server renders chats alike.
    template = load_chat_template(out, warn=False)
    assert template.source == DEFAULT_CHAT_TEMPLATE and not template.is_default
    assert template.stop == (END_OF_TURN,)


def test_only_assistant_turns_are_targets(tmp_path: Path) -> None:
    """Each assistant message is one example whose prompt is the conversation before it, rendered
    with the generation prompt exactly as the server renders a chat request."""
    from lmforge.finetune.sft import collate, encode_example
    from lmforge.train.loss import IGNORE_INDEX

    two_turns = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
            {"role": "assistant", "content": "see you"},
        ]
    }
    data = tmp_path / "c.jsonl"
    data.write_text(json.dumps(two_turns) + "\n")
    run = load_run(_base_run(tmp_path / "base", [DEFAULT_CHAT_TEMPLATE, json.dumps(two_turns)]))
    task = ChatTask().for_run(run)
    examples = task.examples("test", TaskSection(name="chat", test=str(data)))
    template = load_chat_template(run.run_dir, warn=False)
    msgs = two_turns["messages"]
    assert [e.prompt for e in examples] == [
        template.render(msgs[:1], add_generation_prompt=True),
        template.render(msgs[:3], add_generation_prompt=True),
    ]
    assert [e.response for e in examples] == ["hello<|im_end|>\n", "see you<|im_end|>\n"]
    assert [e.references for e in examples] == [("hello",), ("see you",)]
    encoded, _ = encode_example(run.tokenizer, examples[1], 200)
    _, y = collate([encoded], run.tokenizer.eot_id)
    targets = [t for t in y[0].tolist() if t != IGNORE_INDEX]
    assert run.tokenizer.decode(targets) == "see you<|im_end|>\n" + EOT  # nothing of the prompt


def test_bad_conversations_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(DataError, match="bad.jsonl:1 has no assistant message"):
        read_conversations(bad)
    bad.write_text('{"messages": [{"role": "robot", "content": "hi"}]}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: messages\[0\].role is 'robot'"):
        read_conversations(bad)


def test_export_carries_the_template_transformers_renders_alike(tmp_path: Path) -> None:
    """`apply_chat_template` on the exported model gives the ids lmforge's template gives."""
    from transformers import AutoTokenizer

    from lmforge.interop.export import export_hf

    chat = _conversations(2)[1]["messages"]
    run_dir = _base_run(tmp_path / "base", [DEFAULT_CHAT_TEMPLATE, json.dumps(chat)])
    export_hf(run_dir, tmp_path / "hf")
    assert read_tokenizer_config(tmp_path / "hf")["chat_template"] == DEFAULT_CHAT_TEMPLATE
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    ours = load_run(run_dir)
    text = load_chat_template(run_dir, warn=False).render(chat[:2], add_generation_prompt=True)
    theirs = hf.apply_chat_template(chat[:2], add_generation_prompt=True, tokenize=True)
    if not isinstance(theirs, list):  # newer transformers return a BatchEncoding
        theirs = theirs["input_ids"]
    assert list(theirs) == ours.tokenizer.encode(text)
