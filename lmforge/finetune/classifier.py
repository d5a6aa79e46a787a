"""`lmforge finetune` for classification tasks: fine-tune, test, and write the new run dir.

The new run dir is a normal one (config, tokenizer, a checkpoint of the fine-tuned body, so
`generate`, `export` and `init.from` accept it) plus `classifier/` (the head and its labels),
`finetune.toml`, and `eval/<task>.json|md` + a confusion-matrix PNG with the test results. It is
written under a temp name and renamed when complete, so a failure leaves no half-written run.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import save_config
from lmforge.eval.metrics import accuracy, confusion_matrix, macro_f1, majority_accuracy
from lmforge.eval.report import markdown_table, save_confusion_png, write_report
from lmforge.eval.tasks.classification import ClassificationData, encode_examples
from lmforge.finetune.config import ClassifierSection, FinetuneConfig
from lmforge.finetune.publish import FINETUNE_CONFIG, check_out
from lmforge.models.heads import SequenceClassifier, pad_batch, predict, save_head
from lmforge.run.rundir import CLASSIFIER_DIR, LoadedRun, create_run_dir, remove_run_dir
from lmforge.runtime import autocast, resolve_dtype, seed_everything

if TYPE_CHECKING:
    from lmforge.verb import Flags

log = logging.getLogger(__name__)


def finetune_classifier(
    task: str, data: ClassificationData, run: LoadedRun, cfg: FinetuneConfig, flags: Flags
) -> int:
    """Fine-tune `run` with a classification head on `data`; report test metrics; save."""
    out = check_out(cfg, flags)
    assert data.train and data.dev and data.test  # loaded with all three splits
    ccfg = cfg.classifier
    max_len = min(ccfg.max_len, run.model.max_context or ccfg.max_len)
    train = data.train
    if ccfg.limit_train:
        train = type(train)(train.texts[: ccfg.limit_train], train.labels[: ccfg.limit_train])
    device = next(run.model.parameters()).device
    seed_everything(cfg.seed)
    model = SequenceClassifier(run.model, len(data.labels), ccfg.pooling, ccfg.dropout).to(device)
    log.info(
        "fine-tuning %s (%s pooling, %s) on %s: %d train / %d dev / %d test examples",
        run.run_dir,
        ccfg.pooling,
        ccfg.mode,
        task,
        len(train.texts),
        len(data.dev.texts),
        len(data.test.texts),
    )

    def encode(texts: list[str]) -> list[list[int]]:
        return encode_examples(run.tokenizer, texts, max_len)

    with autocast(device, resolve_dtype(cfg.dtype)):
        fit = fit_classifier(
            model,
            (encode(train.texts), train.labels),
            (encode(data.dev.texts), data.dev.labels),
            ccfg,
            cfg.seed,
        )
        preds = predict(model, encode(data.test.texts), ccfg.batch_size * 2)
    metrics = _metrics(task, cfg, fit, data.test.labels, preds)
    meta = {
        "task": task,
        "labels": data.labels,
        "label_names": data.label_names,
        "max_len": max_len,
        "init": str(run.run_dir),
        "init_step": run.step,
    }
    _write_run(
        out,
        run,
        model,
        cfg,
        flags,
        meta,
        metrics,
        confusion_matrix(data.test.labels, preds, len(data.labels)),
    )
    print(markdown_table({out.name: metrics}))
    return 0


def _metrics(
    task: str, cfg: FinetuneConfig, fit: FitResult, y_true: list[int], y_pred: list[int]
) -> dict[str, float | int | str]:
    return {
        "task": task,
        "method": "finetuned",
        "pooling": cfg.classifier.pooling,
        "mode": cfg.classifier.mode,
        "n": len(y_true),
        "acc": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "majority_acc": majority_accuracy(y_true),
        "dev_acc": fit.best_dev_acc,
        "steps": fit.steps,
        "best_step": fit.best_step,
        "epochs": round(fit.epochs, 2),
        "seconds": round(fit.seconds, 1),
        "stopped": fit.stopped,
    }


def _write_run(
    out: Path,
    run: LoadedRun,
    model: SequenceClassifier,
    cfg: FinetuneConfig,
    flags: Flags,
    meta: dict,
    metrics: dict[str, float | int | str],
    matrix: list[list[int]],
) -> None:
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        train_config = run.config.model_copy(update={"out": str(out)})
        create_run_dir(
            tmp,
            model.body,
            run.model_config,
            run.tokenizer,
            config=train_config,
            step=int(metrics["steps"]),
            overwrite=True,
            info={"finetune": {"task": meta["task"], "init": meta["init"]}},
        )
        save_config(cfg, tmp / FINETUNE_CONFIG)
        save_head(model, tmp / CLASSIFIER_DIR, meta)
        title = f"{meta['task']} (fine-tuned): acc {float(metrics['acc']):.3f}"
        save_confusion_png(
            matrix, meta["label_names"], tmp / "eval" / f"{meta['task']}_confusion.png", title
        )
        details = {"labels": meta["label_names"], "confusion_matrix": matrix}
        write_report(tmp, meta["task"], metrics, details, column=out.name)
        if out.exists():
            if flags.overwrite and any(out.iterdir()):
                remove_run_dir(out)
            else:
                out.rmdir()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("wrote %s", out)


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


def _order_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    perm = torch.randperm(n, generator=generator).tolist()
    for i in range(0, n, batch_size):
        yield perm[i : i + batch_size]


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
