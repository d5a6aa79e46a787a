"""The run's `tokenizer_config.json`: its chat template, and rendering conversations with it.

Follows the Hugging Face convention (a Jinja `chat_template` string in `tokenizer_config.json`,
rendered in a sandbox with `messages`, `add_generation_prompt`, `bos_token`, `eos_token`), so that
the server, chat fine-tuning and `transformers`' `apply_chat_template` on an export all produce the
same text. A run without a template gets `DEFAULT_CHAT_TEMPLATE` (ChatML) and a logged warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
EOS_TOKEN = "<|endoftext|>"  # every lmforge tokenizer has it (lmforge.data.tokenizer.EOT)

# ChatML (OpenAI's, used by Qwen and many others): `<|im_start|>role\ncontent<|im_end|>\n` per
# message, then `<|im_start|>assistant\n` to ask for a reply. Chosen because it needs no token the
# tokenizer lacks: when `<|im_start|>`/`<|im_end|>` are not special tokens they are plain text
# (several tokens with BPE or bytes), and the role names are plain words. A reply ends at
# `<|im_end|>`, which `END_OF_TURN` names so the server can stop there.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
END_OF_TURN = "<|im_end|>"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template and how a reply in it ends.

    `stop` are the strings that end an assistant turn (the default template's `<|im_end|>`; a
    run's own template may add its end marker under `lmforge_stop` in tokenizer_config.json).
    """

    source: str
    is_default: bool = False
    stop: tuple[str, ...] = ()
    variables: Mapping[str, Any] = field(default_factory=dict)

    def render(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt text of `messages` (a reply is asked for with `add_generation_prompt`)."""
        return render_chat(self.source, messages, add_generation_prompt, **self.variables)

    def assistant_spans(self, messages: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
        """Character spans (start, end) of each assistant message's content in `render(messages,
        add_generation_prompt=False)`, end marker included: what chat fine-tuning trains on."""
        return assistant_spans(self.source, messages, **self.variables)


def read_tokenizer_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's tokenizer_config.json as a dict ({} when the run has none)."""
    path = Path(run_dir) / TOKENIZER_CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def write_tokenizer_config(run_dir: str | Path, updates: Mapping[str, Any]) -> Path:
    """Merge `updates` into the run's tokenizer_config.json (written atomically); its path."""
    path = Path(run_dir) / TOKENIZER_CONFIG_FILE
    data = {**read_tokenizer_config(run_dir), **updates}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def write_chat_template(
    run_dir: str | Path, template: str, stop: Sequence[str] = (END_OF_TURN,)
) -> Path:
    """Store `template` as the run's chat template (checked to compile), with its end marker(s)."""
    _compile(template)
    return write_tokenizer_config(
        run_dir, {"chat_template": template, "eos_token": EOS_TOKEN, "lmforge_stop": list(stop)}
    )


def load_chat_template(run_dir: str | Path, warn: bool = True) -> ChatTemplate:
    """The run's chat template, or the default one (with a logged warning when `warn`)."""
    data = read_tokenizer_config(run_dir)
    variables = {
        "eos_token": data.get("eos_token") or EOS_TOKEN,
        "bos_token": data.get("bos_token"),
    }
    source = data.get("chat_template")
    if isinstance(source, list):  # HF's list form: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default")
    if not source:
        if warn:
            log.warning(
                "%s has no chat template; using the default ChatML template "
                "(<|im_start|>role ... <|im_end|>); fine-tune with task=chat to give it one",
                run_dir,
            )
        return ChatTemplate(DEFAULT_CHAT_TEMPLATE, True, (END_OF_TURN,), variables)
    if not isinstance(source, str):
        raise CheckpointError(f"chat_template in {run_dir}/{TOKENIZER_CONFIG_FILE} is not text")
    _compile(source)
    stop = data.get("lmforge_stop", [END_OF_TURN] if END_OF_TURN in source else [])
    return ChatTemplate(source, False, tuple(stop), variables)


def check_messages(messages: Any) -> list[dict[str, str]]:
    """Validate OpenAI-style messages; returns them as plain dicts, or raises ConfigError."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ConfigError("messages must be a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, Mapping) else None
        content = m.get("content") if isinstance(m, Mapping) else None
        if role not in ROLES:
            raise ConfigError(f"messages[{i}].role is {role!r}; use one of {', '.join(ROLES)}")
        if isinstance(content, list):  # OpenAI's content parts: only text parts are understood
            if not all(isinstance(p, Mapping) and p.get("type") == "text" for p in content):
                raise ConfigError(f"messages[{i}].content: only text parts are supported")
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise ConfigError(f"messages[{i}].content must be a string")
        out.append({"role": role, "content": content})
    return out


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = True,
    **variables: Any,
) -> str:
    """Render `messages` with a Jinja chat template, as `transformers`' apply_chat_template does
    (sandboxed; `raise_exception` available to the template)."""
    compiled = _compile(template)
    values = {"eos_token": EOS_TOKEN, "bos_token": None, **variables}
    try:
        return compiled.render(
            messages=check_messages(messages), add_generation_prompt=add_generation_prompt, **values
        )
    except _TemplateRaised as exc:
        raise ConfigError(f"the chat template refused the messages: {exc}") from None


def assistant_spans(
    template: str, messages: Sequence[Mapping[str, Any]], **variables: Any
) -> list[tuple[int, int]]:
    """Spans of the assistant turns in the rendered conversation, found by rendering it one
    message at a time: each assistant turn is what its message adds after the generation prompt
    of the conversation before it. Raises ConfigError for a template whose renderings are not
    prefixes of each other (then the turns cannot be located)."""
    msgs = check_messages(messages)
    full = render_chat(template, msgs, False, **variables)
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start = len(render_chat(template, msgs[:i], True, **variables)) if i else 0
        end = len(render_chat(template, msgs[: i + 1], False, **variables))
        if not full.startswith(render_chat(template, msgs[: i + 1], False, **variables)):
            raise ConfigError("the chat template does not render conversations incrementally")
        spans.append((start, end))
    return spans


class _TemplateRaised(Exception):
    pass


def _raise(message: str) -> None:
    raise _TemplateRaised(message)


def _compile(template: str) -> Any:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # The settings transformers uses, so the same template renders the same text here.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent)
    try:
        return env.from_string(template)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"chat template is not valid Jinja: {exc}") from None
