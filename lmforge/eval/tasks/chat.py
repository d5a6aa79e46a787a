"""`chat`: conversations in OpenAI's format as a generation task (fine-tune with SFT, then score).

`task.train=FILE` (required for finetune), `task.dev=FILE` (default: 10% of the train
conversations, seeded) and `task.test=FILE` (required for eval), JSONL with one conversation per
line: `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`. Every
assistant message is one example: its prompt is the conversation before it rendered with the run's
chat template and the generation prompt, exactly as `lmforge serve` renders a chat request; its
response is the text the template gives that message, end-of-turn marker included. So the loss
falls on assistant turns only, and the fine-tuned run answers in the format the server expects.
Scored by exact match of the reply (cut at the end-of-turn marker) and chrF.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.errors import ConfigError, DataError
from lmforge.eval.bleu import corpus_chrf
from lmforge.eval.config import EvalConfig, TaskSection
from lmforge.eval.generation import Example, GenerationTask, evaluate_generation, exact_match_rate
from lmforge.eval.tasks.files import held_out
from lmforge.run.tokenizer_config import ChatTemplate, check_messages, load_chat_template

if TYPE_CHECKING:
    from lmforge.run.rundir import LoadedRun

DEV_FRACTION = 0.1  # of the train conversations, seeded, when no task.dev is given


def read_conversations(path: Path) -> list[list[dict[str, str]]]:
    """The conversations of a JSONL file; a malformed line is a DataError naming the line."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; check task.train/dev/test")
    conversations = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                messages = check_messages(record.get("messages"))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number} is not valid JSON ({exc.msg})") from None
            except (ConfigError, AttributeError) as exc:
                raise DataError(
                    f'{path}:{number}: {exc}; write {{"messages": [{{"role": "user", '
                    '"content": "..."}, {"role": "assistant", "content": "..."}]}'
                ) from None
            if not any(m["role"] == "assistant" for m in messages):
                raise DataError(f"{path}:{number} has no assistant message to learn from")
            conversations.append(messages)
    if not conversations:
        raise DataError(f"{path} is empty; write one conversation per line")
    return conversations


class ChatTask(GenerationTask):
    """A chat task bound to one chat template (`for_run` binds the run's own)."""

    name = "chat"
    max_new_tokens = 256

    def __init__(self, template: ChatTemplate | None = None) -> None:
        self.template = template

    @property
    def stop(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.template.stop if self.template else ()

    def for_run(self, run: LoadedRun) -> ChatTask:
        """This task with `run`'s chat template (the default ChatML one when it has none)."""
        return ChatTask(load_chat_template(run.run_dir))

    def evaluate(self, run: LoadedRun, cfg: EvalConfig) -> dict[str, Any]:
        return evaluate_generation(self.for_run(run), run, cfg.task, cfg.decode, cfg.limit)

    def examples(self, split: str, cfg: TaskSection) -> list[Example]:
        if self.template is None:
            raise ConfigError("the chat task needs a run's template: use ChatTask.for_run(run)")
        explicit = getattr(cfg, split)
        if explicit:
            conversations = read_conversations(Path(explicit))
        elif split == "dev" and cfg.train:
            conversations = held_out(read_conversations(Path(cfg.train)), DEV_FRACTION, dev=True)
        else:
            raise ConfigError(f"task chat needs task.{split}=FILE.jsonl (one conversation a line)")
        if split == "train" and not cfg.dev:
            conversations = held_out(conversations, DEV_FRACTION, dev=False)
        return [e for i, c in enumerate(conversations) for e in self._turns(c, f"{split}-{i}")]

    def _turns(self, messages: list[dict[str, str]], name: str) -> list[Example]:
        """One example per assistant message: (prompt so far, the template's text of the reply)."""
        assert self.template is not None
        full = self.template.render(messages, add_generation_prompt=False)
        spans = iter(self.template.assistant_spans(messages))
        out = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start, end = next(spans)
            prompt = self.template.render(messages[:i], add_generation_prompt=True)
            reply = message["content"]
            out.append(Example(prompt, full[start:end], (reply,), f"{name}-{i}"))
        return out

    def score(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        return {
            "exact_match": exact_match_rate(predictions, examples),
            "chrf": corpus_chrf(predictions, [e.references[0] for e in examples]),
        }


TASK = ChatTask()
