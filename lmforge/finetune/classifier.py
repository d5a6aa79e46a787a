"""`lmforge finetune` for classification tasks: train a head through the Trainer, test, publish.

The classifier trains through `lmforge.train`'s Trainer like pretraining and SFT (checkpoints,
resume, Ctrl-C, `metrics.jsonl`, progress): `ClassifierBatches` is its batch source (token ids,
lengths, labels; a seeded shuffle per epoch, resumable by step) and `ClassifierObjective` its loss
(cross-entropy of the pooled logits; dev accuracy picks the best checkpoint). The model under
training is a `SequenceClassifier`; in head-only mode its body is frozen, the optimizer holds only
the head, and the body's pooled vectors are computed once. The `classifier.*` keys become the run's
TrainConfig (`classifier_train_config`): AdamW (`head_lr` as its own parameter groups), linear
warmup then linear decay to zero, `evals_per_epoch` dev evaluations per epoch, `eval.patience` for
early stopping, `max_time` checked every step.

Training happens in `.<name>.partial/` beside `out` (`publish.py`). At the end the best
checkpoint's weights are loaded, the test split is predicted, and the new run dir is written: a
normal one (config, tokenizer, a checkpoint of the fine-tuned body, so `generate`, `export` and
`init.from` accept it) plus `classifier/` (the head and its labels), `finetune.toml`,
`eval/<task>.json|md` + a confusion-matrix PNG, and the training's metrics.jsonl and plots.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import save_config
from lmforge.errors import CheckpointError, ConfigError
from lmforge.eval.baselines import bag_of_words_baseline
from lmforge.eval.metrics import accuracy, confusion_matrix, macro_f1, majority_accuracy
from lmforge.eval.report import markdown_table, save_confusion_png, write_report
from lmforge.eval.tasks.classification import ClassificationData, encode_examples
from lmforge.finetune.config import FinetuneConfig
from lmforge.finetune.publish import (
    FINETUNE_CONFIG,
    Resume,
    check_out,
    discard,
    publish,
    resume_command,
    start_partial,
)
from lmforge.models.heads import SequenceClassifier, pad_batch, predict, save_head
from lmforge.run import checkpoint as ckpt
from lmforge.run import rundir
from lmforge.run.config import (
    CheckpointSection,
    EvalSection,
    InitSection,
    OptimSection,
    SampleSection,
    ScheduleSection,
    TrainConfig,
    TrainSection,
)
from lmforge.runtime import autocast, resolve_dtype, seed_everything
from lmforge.train.interface import BatchSource, Components, Validation
from lmforge.train.optim import decay_groups
from lmforge.train.state import TrainState, restore_model_weights

if TYPE_CHECKING:
    from lmforge.finetune.adapters import Adapter
    from lmforge.run.rundir import LoadedRun
    from lmforge.verb import Flags

log = logging.getLogger(__name__)

Examples = tuple[Sequence[Sequence[int]], Sequence[int]]  # token ids per example, class ids

# The Trainer's stop reasons as a classifier report names them.
_STOPPED = {"steps": "epochs", "time": "time", "patience": "patience"}


def finetune_classifier(
    task: str,
    data: ClassificationData,
    run: LoadedRun,
    cfg: FinetuneConfig,
    flags: Flags,
    adapter: Adapter | None = None,
) -> int:
    """Fine-tune `run` with a classification head on `data`; report test metrics; publish.

    With `adapter` (LoRA) the body is frozen but for its adapters, which train with the head."""
    out = check_out(cfg, flags)
    assert data.train and data.dev and data.test  # loaded with all three splits
    ccfg = cfg.classifier
    max_len = min(ccfg.max_len, run.model.max_context or ccfg.max_len)
    train = data.train
    if ccfg.limit_train:
        train = type(train)(train.texts[: ccfg.limit_train], train.labels[: ccfg.limit_train])
    device = next(run.model.parameters()).device
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

    work, resume = start_partial(out, flags)
    seed_everything(cfg.seed)
    model = SequenceClassifier(run.model, len(data.labels), ccfg.pooling, ccfg.dropout).to(device)
    train_set = (encode(train.texts), train.labels)
    dev_set = (encode(data.dev.texts), data.dev.labels)
    config = classifier_train_config(cfg, run.model_config, len(train.texts), len(dev_set[0]))
    with rundir.RunLock(work):
        _write_partial_files(work, config, cfg, run, flags, task, resume)
        fit = fit_classifier(
            model,
            train_set,
            dev_set,
            config,
            work,
            head_only=ccfg.mode == "head",
            head_lr=ccfg.head_lr,
            resume=resume,
            final_out=out,
            resume_hint=resume_command(cfg, flags),
        )
    if fit.code != 0:
        log.warning("fine-tuning stopped early; the partial run dir is %s", work)
        return fit.code
    with autocast(device, resolve_dtype(cfg.dtype)):
        preds = predict(model, encode(data.test.texts), ccfg.batch_size * 2)
    metrics = _metrics(task, cfg, fit, data.test.labels, preds)
    metrics.update(
        bag_of_words_baseline(
            (train.texts, train.labels),
            (data.dev.texts, data.dev.labels),
            (data.test.texts, data.test.labels),
        )
    )
    meta = {
        "task": task,
        "labels": data.labels,
        "label_names": data.label_names,
        "max_len": max_len,
        "init": str(run.run_dir),
        "init_step": run.step,
    }
    matrix = confusion_matrix(data.test.labels, preds, len(data.labels))
    _write_run(out, work, run, model, cfg, flags, meta, metrics, matrix, adapter)
    discard(work)
    log.info("test results: %s", out / "eval" / f"{task}.json")
    print(markdown_table({out.name: metrics}))
    return 0


def _write_partial_files(
    work: Path,
    config: TrainConfig,
    cfg: FinetuneConfig,
    run: LoadedRun,
    flags: Flags,
    task: str,
    resume: Resume | None,
) -> None:
    save_config(config, work / rundir.CONFIG_FILE)
    save_config(cfg, work / FINETUNE_CONFIG)
    run.tokenizer.save(work / rundir.TOKENIZER_FILE)
    info = {"kind": "classifier", "task": task, "init": str(run.run_dir), "step": run.step}
    extra: dict[str, Any] = {"finetune": info}
    if resume is not None:
        extra["resumed_from"] = resume.checkpoint.name
    device = str(next(run.model.parameters()).device)
    rundir.write_run_info(work, flags.argv or None, device, extra)


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
    work: Path,
    run: LoadedRun,
    model: SequenceClassifier,
    cfg: FinetuneConfig,
    flags: Flags,
    meta: dict,
    metrics: dict[str, float | int | str],
    matrix: list[list[int]],
    adapter: Adapter | None = None,
) -> None:
    """The published run dir (today's format), built beside `out` and renamed into place."""
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        train_config = run.config.model_copy(update={"out": str(out)})
        rundir.create_run_dir(
            tmp,
            model.body,
            run.model_config,
            run.tokenizer,
            config=train_config,
            step=int(metrics["steps"]),
            overwrite=True,
            info={"finetune": {"task": meta["task"], "init": meta["init"]}},
            adapter=adapter.as_tuple() if adapter is not None else None,
        )
        save_config(cfg, tmp / FINETUNE_CONFIG)
        save_head(model, tmp / rundir.CLASSIFIER_DIR, meta)
        title = f"{meta['task']} (fine-tuned): acc {float(metrics['acc']):.3f}"
        save_confusion_png(
            matrix, meta["label_names"], tmp / "eval" / f"{meta['task']}_confusion.png", title
        )
        details = {"labels": meta["label_names"], "confusion_matrix": matrix}
        write_report(tmp, meta["task"], metrics, details, column=out.name)
        # The training's record: every loss and dev row, and the loss plot.
        for name in (rundir.METRICS_FILE, rundir.PLOTS_DIR, rundir.TB_DIR):
            source = work / name
            if source.is_dir():
                shutil.copytree(source, tmp / name)
            elif source.is_file():
                shutil.copy2(source, tmp / name)
        publish(tmp, out, flags)
    finally:
        discard(tmp)


# ---------------------------------------------------------------------------------------------
# The Trainer's parts: config, batch source, objective, optimizer


def classifier_train_config(
    cfg: FinetuneConfig, model_config: Any, n_train: int, n_dev: int
) -> TrainConfig:
    """The TrainConfig of a classifier fine-tuning, from the `classifier.*` keys.

    Steps: `epochs` passes of ceil(n_train / batch_size) batches (the last one of an epoch may be
    short); `evals_per_epoch` dev evaluations per epoch over the whole dev set; the schedule is
    linear warmup over `warmup_frac` of the steps, then linear decay to zero (`wsd` with the
    decay spanning the run).
    """
    c = cfg.classifier
    batch = min(c.batch_size, n_train)
    steps_per_epoch = math.ceil(n_train / batch)
    total = steps_per_epoch * c.epochs
    eval_every = max(1, steps_per_epoch // c.evals_per_epoch)
    return TrainConfig(
        out=cfg.out,
        seed=cfg.seed,
        device=cfg.device,
        dtype=cfg.dtype,
        model=model_config,
        train=TrainSection(
            max_steps=total,
            max_time=c.max_time,
            batch_size=batch,
            sampling="random",  # examples are independent: nothing carries across rows
            threads=cfg.threads,
            log_every=max(1, min(10, eval_every)),
            print_every=max(1, min(100, eval_every)),
        ),
        optim=OptimSection(lr=c.lr, weight_decay=c.weight_decay, beta2=0.98),
        schedule=ScheduleSection(
            kind="wsd", warmup_steps=int(c.warmup_frac * total), min_lr_ratio=0.0, decay_frac=1.0
        ),
        checkpoint=CheckpointSection(keep_last=1),
        eval=EvalSection(
            every=eval_every, batches=_eval_batches(n_dev, batch), patience=c.patience
        ),
        sample=SampleSection(every=0),
        init=InitSection(**{"from": cfg.init, "checkpoint": cfg.checkpoint}),
    )


def _eval_batches(n_dev: int, batch_size: int) -> int:
    """Dev batches (of twice the training batch, no gradients) that cover the dev set once."""
    return math.ceil(n_dev / min(2 * batch_size, max(n_dev, 1)))


@dataclass
class ClassifierBatch:
    """Right-padded token ids (B, T), lengths (B,), labels (B,), and, when the body is frozen,
    its pooled vectors (B, d) computed once before training."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    pooled: torch.Tensor | None = None

    def to(self, device: torch.device) -> ClassifierBatch:
        pooled = None if self.pooled is None else self.pooled.to(device)
        return ClassifierBatch(
            self.tokens.to(device), self.lengths.to(device), self.labels.to(device), pooled
        )


class ClassifierBatches:
    """A `BatchSource` of labelled examples, one micro-batch per step.

    Shuffled: a seeded permutation per epoch (`(seed, epoch)`), so the position is the step
    alone; each epoch is cut into ceil(n / batch_size) batches, the last one possibly short.
    Unshuffled (validation): examples sorted by length, so batches carry little padding.
    `pooled` (n, d), when given, rides along with each batch (a frozen body's vectors).
    """

    def __init__(
        self,
        examples: Examples,
        batch_size: int,
        seed: int,
        shuffle: bool,
        pooled: torch.Tensor | None = None,
    ) -> None:
        ids, labels = examples
        if not ids:
            raise ConfigError("no classification examples in a split; check the task's files")
        self.ids, self.labels = ids, torch.tensor(list(labels), dtype=torch.long)
        self.seed, self.shuffle, self.pooled = seed, shuffle, pooled
        self.batch_size = self.rows = min(batch_size, len(ids))
        self.accum_steps = 1
        self.lengths = np.array([len(x) for x in ids])
        self.seq_len = int(self.lengths.max())
        self.steps_per_epoch = math.ceil(len(ids) / self.batch_size)
        self.step = 0
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if self.shuffle:
                order = np.random.default_rng((self.seed, epoch)).permutation(len(self.ids))
            else:
                order = np.argsort(self.lengths, kind="stable")
            self._orders = {epoch: order}
        return self._orders[epoch]

    def next_batches(self) -> list[ClassifierBatch]:
        epoch, i = divmod(self.step, self.steps_per_epoch)
        picked = self._order(epoch)[i * self.batch_size : (i + 1) * self.batch_size].tolist()
        self.step += 1
        tokens, lengths = pad_batch([self.ids[j] for j in picked])
        pooled = None if self.pooled is None else self.pooled[picked]
        return [ClassifierBatch(tokens, lengths, self.labels[picked], pooled)]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seed": self.seed, "n": len(self.ids)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("n", len(self.ids)) != len(self.ids):
            raise CheckpointError(
                f"the checkpoint was trained on {state['n']} examples, these are {len(self.ids)}; "
                "resume with the same task files and classifier.limit_train"
            )
        self.step = int(state["step"])


class ClassifierObjective:
    """Cross-entropy of the pooled logits; validation reports `dev_acc` (the best is kept) and
    `dev_loss` over the whole dev source."""

    best_metric = "dev_acc"
    higher_is_better = True

    def to_device(self, batch: ClassifierBatch, device: torch.device) -> ClassifierBatch:
        return batch.to(device)

    def forward(self, model: nn.Module, batch: ClassifierBatch, cache: Any = None) -> torch.Tensor:
        if batch.pooled is not None:  # frozen body: only dropout and the head run
            return model.head(model.drop(batch.pooled))
        return model(batch.tokens, batch.lengths)

    def loss(self, output: torch.Tensor, batch: ClassifierBatch) -> torch.Tensor:
        return F.cross_entropy(output.float(), batch.labels)

    def tokens(self, batch: ClassifierBatch) -> int:
        return batch.tokens.numel()

    @torch.no_grad()
    def validate(self, model: nn.Module, source: BatchSource, how: Validation) -> dict[str, float]:
        # Put back each module's own mode after: a frozen body stays in eval mode.
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        device = next(model.parameters()).device
        source.step = 0
        correct, nats, n = 0, 0.0, 0
        for _ in range(how.batches):
            for batch in source.next_batches():
                batch = batch.to(device)
                with how.amp:
                    logits = model(batch.tokens, batch.lengths)
                nats += float(F.cross_entropy(logits.float(), batch.labels, reduction="sum"))
                correct += int((logits.argmax(dim=-1) == batch.labels).sum())
                n += len(batch.labels)
        for module, training in modes:
            module.training = training
        return {"dev_acc": correct / n, "dev_loss": nats / n}

    def describe(self, metrics: dict[str, float]) -> str:
        return f"dev_acc {metrics['dev_acc']:.4f}  dev_loss {metrics['dev_loss']:.4f}"


def classifier_optimizer(
    model: SequenceClassifier, cfg: OptimSection, head_lr: float | None, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over what trains: the body's decay/no-decay groups at `optim.lr` (none when it is
    frozen) and the head's at `head_lr` (default `optim.lr`)."""
    groups = []
    for part, lr in ((model.body, cfg.lr), (model.head, head_lr or cfg.lr)):
        for group in decay_groups(part, cfg.weight_decay):
            group["lr"] = group["initial_lr"] = lr
            group["name"] = f"{'head' if part is model.head else 'body'}_{group['name']}"
            groups.append(group)
    # The fused kernel does the whole update in one pass (CPU and CUDA); foreach is the fallback.
    fused = cfg.fused if cfg.fused is not None else device.type in ("cuda", "cpu")
    kwargs: dict[str, Any] = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **kwargs)


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class FitResult:
    """How a classifier fine-tuning ended: the exit code (0: finished; then the model holds the
    best dev weights), the best dev accuracy and when it was reached."""

    code: int
    best_dev_acc: float
    best_step: int
    steps: int
    epochs: float
    seconds: float
    stopped: str  # "epochs", "patience" or "time" ("" when interrupted)


def fit_classifier(
    model: SequenceClassifier,
    train: Examples,
    dev: Examples,
    config: TrainConfig,
    work: Path,
    *,
    head_only: bool = False,
    head_lr: float | None = None,
    resume: Resume | None = None,
    final_out: Path | None = None,
    resume_hint: str | None = None,
) -> FitResult:
    """Train `model` on `train` through the Trainer in `work`, evaluating on `dev`.

    Checkpoints (of the whole classifier), metrics.jsonl and plots go to `work`. `resume`
    continues from one of its checkpoints. When training finished, the best dev checkpoint's
    weights are loaded into `model`; an interrupted run (Ctrl-C) returns its exit code instead.
    """
    from lmforge.train.trainer import Trainer

    device = next(model.parameters()).device
    dtype = resolve_dtype(config.dtype)
    state = TrainState()
    if resume is not None:
        restore_model_weights(model, resume.checkpoint)
        state = TrainState.from_dict(resume.state)
    model.train()
    pooled = None
    if head_only:
        model.body.requires_grad_(False)
        model.body.eval()  # a frozen body's pooled vectors never change: compute them once
        with autocast(device, dtype):
            pooled = _pooled(model, train[0], 2 * config.train.batch_size)
    source = ClassifierBatches(train, config.train.batch_size, config.seed, True, pooled)
    dev_source = ClassifierBatches(dev, 2 * config.train.batch_size, config.seed, False)
    parts = Components(
        config,
        model,
        classifier_optimizer(model, config.optim, head_lr, device),
        source,
        dev_source,
        device,
        objective=ClassifierObjective(),
        dtype=dtype,
        state=state,
    )
    work.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(parts, work, final_out=final_out, resume_hint=resume_hint)
    if resume is not None:
        trainer.restore(resume.checkpoint)
    # A run that finished but was not published (a crash in between) is not trained again.
    code = 0 if trainer.state.finished else trainer.fit()
    if head_only:  # a LoRA body stays frozen but for its adapters
        model.body.requires_grad_(True)
    state = trainer.state
    result = FitResult(
        code,
        state.best_val if state.best_val is not None else 0.0,
        state.best_step,
        state.step,
        state.step / source.steps_per_epoch,
        state.elapsed_s,
        _STOPPED.get(state.stopped, state.stopped),
    )
    if code == 0:
        _load_best(model, work)
    return result


def _load_best(model: SequenceClassifier, work: Path) -> None:
    root = work / rundir.CHECKPOINTS_DIR
    name = ckpt.read_pointer(root, ckpt.BEST) or ckpt.read_pointer(root, ckpt.LATEST)
    if name is None:
        raise CheckpointError(f"{root} holds no checkpoint to load the fine-tuned weights from")
    ckpt.verify_checkpoint(root / name, only=("model.safetensors",))
    restore_model_weights(model, root / name)


@torch.no_grad()
def _pooled(
    model: SequenceClassifier, ids: Sequence[Sequence[int]], batch_size: int
) -> torch.Tensor:
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(ids), batch_size):
        tokens, lengths = pad_batch(ids[i : i + batch_size])
        out.append(model.pool(tokens.to(device), lengths.to(device)).float().cpu())
    return torch.cat(out)
