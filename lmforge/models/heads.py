"""Heads on top of a language model: sequence classification (pooled hidden states -> classes)
and extractive question answering (`SpanQAHead`: start/end logits per token).

`SequenceClassifier` wraps any model with `hidden_states(tokens) -> (B, T, d)` (GPT and LSTM) and
adds dropout + a linear head over the mean or the max of the hidden states, or the last token's.
Inputs are right-padded, so causal models never see the pads of real tokens. Training the head
lives in `lmforge/finetune/classifier.py`; here are the module, batching, prediction and the
head's files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.errors import CheckpointError

log = logging.getLogger(__name__)

HEAD_FILE = "head.safetensors"
META_FILE = "classifier.json"
FORMAT_VERSION = 1


class SequenceClassifier(nn.Module):
    """Token ids (B, T) and lengths (B,) -> class logits (B, num_classes)."""

    def __init__(self, body: nn.Module, num_classes: int, pooling: str, dropout: float = 0.0):
        super().__init__()
        self.body = body
        self.pooling = pooling
        self.drop = nn.Dropout(dropout)
        # Both model kinds end in `lm_head`, whose input width is the hidden-state width.
        self.head = nn.Linear(body.lm_head.in_features, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def pool(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Sentence vectors (B, d) from the body's hidden states at the real tokens."""
        hidden = self.body.hidden_states(tokens).float()  # (B, T, d)
        if self.pooling == "last":
            rows = torch.arange(tokens.size(0), device=tokens.device)
            return hidden[rows, lengths - 1]  # (B, d)
        positions = torch.arange(tokens.size(1), device=tokens.device)
        mask = (positions[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, T, 1)
        if self.pooling == "max":
            # Max over time, as Kim's (2014) sentence CNNs pool: each feature fires on the one
            # token where it is strongest, so a single "not" or "great" is not averaged away.
            return hidden.masked_fill(~mask, float("-inf")).amax(dim=1)  # (B, d)
        return (hidden * mask).sum(dim=1) / lengths[:, None].clamp(min=1)  # (B, d)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.pool(tokens, lengths)))

    # What the Trainer reads from a model, answered by the body (the head is one small matmul).

    @property
    def config(self) -> Any:
        """The body's model config (a checkpoint of the classifier names the body's model)."""
        return self.body.config

    @property
    def max_context(self) -> int | None:
        return self.body.max_context

    @property
    def vocab_size(self) -> int:
        return int(self.body.vocab_size)

    def flops_per_token(self, seq_len: int) -> float:
        """The body's training FLOPs per token without its LM head (a classifier never runs it),
        plus the class head's, which runs once per sequence of `seq_len` tokens."""
        head = 6 * sum(p.numel() for p in self.head.parameters()) / seq_len
        return self.body.flops_per_token(seq_len, lm_head=False) + head

    def num_params(self) -> int:
        """The body's count plus the head's weights and bias."""
        return self.body.num_params() + sum(p.numel() for p in self.head.parameters())


# ---------------------------------------------------------------------------------------------
# Batching


def pad_batch(ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists with 0: (tokens (B, T), lengths (B,))."""
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
    tokens = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for row, x in enumerate(ids):
        tokens[row, : len(x)] = torch.tensor(x, dtype=torch.long)
    return tokens, lengths


def truncate(ids: Sequence[Sequence[int]], max_len: int, fill: int) -> list[list[int]]:
    """Keep the first `max_len` tokens of each example; an empty one becomes `[fill]`."""
    return [list(x[:max_len]) or [fill] for x in ids]


@torch.no_grad()
def predict(
    model: SequenceClassifier, ids: Sequence[Sequence[int]], batch_size: int = 64
) -> list[int]:
    """Predicted class ids, batched by length so padding stays small."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    preds = [0] * len(ids)
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        tokens, lengths = pad_batch([ids[j] for j in chunk])
        logits = model(tokens.to(device), lengths.to(device))
        for j, p in zip(chunk, logits.argmax(dim=-1).tolist(), strict=True):
            preds[j] = p
    model.train(was_training)
    return preds


# ---------------------------------------------------------------------------------------------
# Saving and loading the head (the body is saved as a normal run-dir checkpoint)


def save_head(model: SequenceClassifier, directory: Path, meta: dict[str, Any]) -> None:
    """Write `head.safetensors` and `classifier.json` (labels, pooling, task) into `directory`."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    save_file(state, str(directory / HEAD_FILE))
    payload = {"format_version": FORMAT_VERSION, "pooling": model.pooling, **meta}
    (directory / META_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def load_head(body: nn.Module, directory: Path) -> tuple[SequenceClassifier, dict[str, Any]]:
    """Rebuild the classifier saved by `save_head` around `body`; returns it and its metadata."""
    from safetensors.torch import load_file

    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        state = load_file(str(directory / HEAD_FILE))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{directory} holds no readable classifier head ({exc})") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{meta_path} is from a newer lmforge; upgrade lmforge")
    model = SequenceClassifier(body, len(meta["labels"]), meta["pooling"])
    model.head.load_state_dict(state)
    device = next(body.parameters()).device
    return model.to(device).eval(), meta


# ---------------------------------------------------------------------------------------------
# Extractive question answering: a start/end head (Transformers' `qa_outputs`)

SPAN_DIR = "span_qa"  # a span-QA run's head, beside its body's checkpoints
SPAN_META_FILE = "span_qa.json"


class SpanQAHead(nn.Module):
    """Token ids (B, T) -> (start logits (B, T), end logits (B, T)), fp32.

    One `Linear(d, 2)` on the body's final normed hidden states, as Transformers'
    `*ForQuestionAnswering` models (`qa_outputs`); which positions may hold an answer (the
    context's, not the question's or the pads') is the decoder's business, not the head's.
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.qa_outputs = nn.Linear(body.lm_head.in_features, 2)
        nn.init.normal_(self.qa_outputs.weight, std=0.02)
        nn.init.zeros_(self.qa_outputs.bias)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.qa_outputs(self.body.hidden_states(tokens)).float()  # (B, T, 2)
        start, end = logits.unbind(dim=-1)  # (B, T) each
        return start, end

    @property
    def config(self) -> Any:
        return self.body.config

    @property
    def max_context(self) -> int | None:
        return self.body.max_context

    @property
    def vocab_size(self) -> int:
        return int(self.body.vocab_size)

    def flops_per_token(self, seq_len: int) -> float:
        """The body's training FLOPs per token with `qa_outputs` in place of its LM head."""
        head = 6 * sum(p.numel() for p in self.qa_outputs.parameters())
        return self.body.flops_per_token(seq_len, lm_head=False) + head

    def num_params(self) -> int:
        return self.body.num_params() + sum(p.numel() for p in self.qa_outputs.parameters())


def save_span_head(model: SpanQAHead, directory: Path, meta: dict[str, Any]) -> None:
    """Write `head.safetensors` (qa_outputs) and `span_qa.json` (task, max_len, ...)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.qa_outputs.state_dict().items()}
    save_file(state, str(directory / HEAD_FILE))
    payload = {"format_version": FORMAT_VERSION, **meta}
    (directory / SPAN_META_FILE).write_text(json.dumps(payload, indent=2) + "\n", "utf-8")


def load_span_head(body: nn.Module, directory: Path) -> tuple[SpanQAHead, dict[str, Any]]:
    """The span-QA model saved by `save_span_head` around `body`, and its metadata."""
    from safetensors.torch import load_file

    try:
        meta = json.loads((directory / SPAN_META_FILE).read_text(encoding="utf-8"))
        state = load_file(str(directory / HEAD_FILE))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{directory} holds no readable span-QA head ({exc})") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{directory / SPAN_META_FILE} is from a newer lmforge; upgrade")
    model = SpanQAHead(body)
    model.qa_outputs.load_state_dict(state)
    device = next(body.parameters()).device
    return model.to(device).eval(), meta
