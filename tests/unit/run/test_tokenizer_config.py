"""The run's chat template: default with a warning, stored and loaded, rendered exactly as
`transformers`' apply_chat_template renders it, and the assistant spans chat fine-tuning uses."""

from __future__ import annotations

import importlib.util
import json
import logging

import pytest
from lmforge_testing import require

from lmforge.errors import CheckpointError, ConfigError
from lmforge.run.tokenizer_config import (
    DEFAULT_CHAT_TEMPLATE,
    END_OF_TURN,
    TOKENIZER_CONFIG_FILE,
    load_chat_template,
    render_chat,
    write_chat_template,
    write_tokenizer_config,
)

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Again?"},
    {"role": "assistant", "content": "Yes."},
]


def test_a_run_without_a_template_gets_chatml_and_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="lmforge"):
        template = load_chat_template(tmp_path)
    assert template.is_default and template.stop == (END_OF_TURN,)
    assert "no chat template" in caplog.text
    assert template.render(MESSAGES[:2]) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert template.render(MESSAGES[:3], add_generation_prompt=False).endswith(
        "<|im_start|>assistant\nHello.<|im_end|>\n"
    )


def test_a_stored_template_is_loaded_and_other_keys_are_kept(tmp_path):
    write_tokenizer_config(tmp_path, {"model_max_length": 64})
    custom = "{% for m in messages %}[{{ m.role }}] {{ m.content }}</s>{% endfor %}"
    write_chat_template(tmp_path, custom, stop=("</s>",))
    data = json.loads((tmp_path / TOKENIZER_CONFIG_FILE).read_text())
    assert data["model_max_length"] == 64 and data["chat_template"] == custom
    template = load_chat_template(tmp_path)
    assert not template.is_default and template.stop == ("</s>",)
    assert template.render(MESSAGES[1:3]) == "[user] Hi!</s>[assistant] Hello.</s>"


def test_assistant_spans_cover_each_reply_and_its_end_marker(tmp_path):
    template = load_chat_template(tmp_path, warn=False)
    text = template.render(MESSAGES, add_generation_prompt=False)
    spans = template.assistant_spans(MESSAGES)
    assert [text[a:b] for a, b in spans] == ["Hello.<|im_end|>\n", "Yes.<|im_end|>\n"]


def test_bad_messages_and_templates_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"messages\[0\].role"):
        render_chat(DEFAULT_CHAT_TEMPLATE, [{"role": "robot", "content": "x"}])
    with pytest.raises(ConfigError, match="not valid Jinja"):
        write_chat_template(tmp_path, "{% for m in messages %}")
    refusing = "{{ raise_exception('only user turns') }}"
    with pytest.raises(ConfigError, match="only user turns"):
        render_chat(refusing, MESSAGES)
    (tmp_path / TOKENIZER_CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_chat_template(tmp_path)


@pytest.mark.parametrize("generation_prompt", [True, False])
def test_rendering_equals_transformers_apply_chat_template(tmp_path, generation_prompt):
    require(importlib.util.find_spec("transformers") is not None, "transformers not installed")
    from transformers import PreTrainedTokenizerFast

    from lmforge.data.tokenizer import build_char

    tokenizer = build_char(["abc"], ["<|endoftext|>"])
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer.inner, eos_token="<|endoftext|>")
    hf.chat_template = DEFAULT_CHAT_TEMPLATE
    messages = MESSAGES if not generation_prompt else MESSAGES[:4]
    expected = hf.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    text = render_chat(DEFAULT_CHAT_TEMPLATE, messages, generation_prompt)
    assert text == expected
    ids = hf.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=False
    )
    assert list(ids) == tokenizer.encode(text)  # the token ids lmforge feeds the model
