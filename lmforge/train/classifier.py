"""Sequence classification on top of a language model: a pooled head, its training loop, I/O.

`SequenceClassifier` wraps any model with `hidden_states(tokens) -> (B, T, d)` (GPT and LSTM) and
adds dropout + a linear head over the mean of the hidden states or the last token's. Fine-tuning
trains the whole model or only the head (then the frozen body's pooled vectors are computed once),
evaluates on dev a few times per epoch, keeps the best weights and stops early when dev accuracy
stops improving. Inputs are right-padded, so causal models never see the pads of real tokens.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import CheckpointError
from lmforge.eval.config import ClassifierSection
from lmforge.eval.metrics import accuracy

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
        return (hidden * mask).sum(dim=1) / lengths[:, None].clamp(min=1)  # (B, d)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.pool(tokens, lengths)))


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


def _order_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    perm = torch.randperm(n, generator=generator).tolist()
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


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
# Training


@dataclass
class FitResult:
    """What fine-tuning did: the best dev accuracy and when it was reached."""

    best_dev_acc: float
    best_step: int
    steps: int
    epochs: float
    seconds: float
    stopped: str  # "epochs", "patience" or "time"
    history: list[dict[str, float]] = field(default_factory=list)


def _optimizer(model: SequenceClassifier, cfg: ClassifierSection) -> torch.optim.Optimizer:
    head_lr = cfg.head_lr or cfg.lr
    groups: list[dict[str, Any]] = [{"params": list(model.head.parameters()), "lr": head_lr}]
    if cfg.mode == "full":
        decay = [p for p in model.body.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in model.body.parameters() if p.requires_grad and p.dim() < 2]
        groups.append({"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay})
        groups.append({"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0})
    for group in groups:
        group["base_lr"] = group["lr"]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then linear decay to zero (the usual fine-tuning schedule)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


class _EarlyStopping:
    """Tracks the best dev accuracy, keeps a copy of those weights, counts evaluations since."""

    def __init__(self, model: nn.Module, patience: int) -> None:
        self.model, self.patience = model, patience
        self.best_acc, self.best_step, self.bad_evals = -1.0, 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, step: int, dev_acc: float) -> bool:
        """Record one dev evaluation; True when patience has run out."""
        if dev_acc > self.best_acc:
            self.best_acc, self.best_step, self.bad_evals = dev_acc, step, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.patience

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


def fit_classifier(
    model: SequenceClassifier,
    train: tuple[Sequence[Sequence[int]], Sequence[int]],
    dev: tuple[Sequence[Sequence[int]], Sequence[int]],
    cfg: ClassifierSection,
    seed: int = 0,
) -> FitResult:
    """Train on `train` (token ids, labels), early-stopping on `dev`; load the best weights."""
    features = None
    if cfg.mode == "head":
        model.body.requires_grad_(False)
        model.body.eval()  # a frozen body's pooled vectors never change: compute them once
        features = _pooled(model, train[0], cfg.batch_size)
    labels = torch.tensor(train[1], dtype=torch.long)
    steps_per_epoch = math.ceil(len(labels) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_frac * total)
    eval_every = max(1, steps_per_epoch // cfg.evals_per_epoch)
    optimizer = _optimizer(model, cfg)
    generator = torch.Generator().manual_seed(seed)
    stopper = _EarlyStopping(model, cfg.patience)
    result = FitResult(0.0, 0, 0, 0.0, 0.0, "epochs")
    step, start = 0, time.perf_counter()
    model.train()
    model.body.train(cfg.mode == "full")
    while result.stopped == "epochs" and step < total:
        for batch in _order_batches(len(labels), cfg.batch_size, generator):
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * _lr_factor(step, total, warmup)
            loss = _batch_loss(model, batch, train[0], labels, features)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            if step % eval_every == 0 or step == total:
                dev_acc = accuracy(dev[1], predict(model, dev[0], cfg.batch_size * 2))
                elapsed = time.perf_counter() - start
                result.history.append({"step": step, "loss": loss.item(), "dev_acc": dev_acc})
                log.info(
                    "step %d  loss %.4f  dev acc %.4f  (%.0fs)", step, loss.item(), dev_acc, elapsed
                )
                if stopper.update(step, dev_acc):
                    result.stopped = "patience"
                elif cfg.max_time is not None and elapsed > cfg.max_time:
                    result.stopped = "time"
            if result.stopped != "epochs" or step >= total:
                break
    stopper.restore()
    model.body.requires_grad_(True)
    result.best_dev_acc, result.best_step = stopper.best_acc, stopper.best_step
    result.steps, result.epochs = step, step / steps_per_epoch
    result.seconds = time.perf_counter() - start
    return result


def _batch_loss(
    model: SequenceClassifier,
    batch: list[int],
    ids: Sequence[Sequence[int]],
    labels: torch.Tensor,
    features: torch.Tensor | None,
) -> torch.Tensor:
    """Cross-entropy of one batch; from precomputed pooled vectors when the body is frozen."""
    device = next(model.parameters()).device
    if features is not None:
        logits = model.head(model.drop(features[batch].to(device)))
    else:
        tokens, lengths = pad_batch([ids[i] for i in batch])
        logits = model(tokens.to(device), lengths.to(device))
    return F.cross_entropy(logits.float(), labels[batch].to(device))


@torch.no_grad()
def _pooled(
    model: SequenceClassifier, ids: Sequence[Sequence[int]], batch_size: int
) -> torch.Tensor:
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(ids), batch_size * 2):
        tokens, lengths = pad_batch(ids[i : i + batch_size * 2])
        out.append(model.pool(tokens.to(device), lengths.to(device)).cpu())
    return torch.cat(out)


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
