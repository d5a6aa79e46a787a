"""`lmforge finetune` for classification tasks: fine-tune, test, and write the new run dir.

The new run dir is a normal one (config, tokenizer, a checkpoint of the fine-tuned body, so
`generate`, `export` and `init.from` accept it) plus `classifier/` (the head and its labels),
`finetune.toml`, and `eval/<task>.json|md` + a confusion-matrix PNG with the test results. It is
written under a temp name and renamed when complete, so a failure leaves no half-written run.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.config import save_config
from lmforge.errors import ConfigError
from lmforge.eval.config import FinetuneConfig
from lmforge.eval.metrics import accuracy, confusion_matrix, macro_f1, majority_accuracy
from lmforge.eval.report import markdown_table, save_confusion_png, write_report
from lmforge.eval.tasks.classification import CLASSIFIER_DIR, ClassificationData, encode_examples
from lmforge.runtime import autocast, resolve_dtype, seed_everything
from lmforge.train.classifier import (
    FitResult,
    SequenceClassifier,
    fit_classifier,
    predict,
    save_head,
)
from lmforge.train.rundir import LoadedRun, create_run_dir, remove_run_dir

if TYPE_CHECKING:
    from lmforge.verb import Flags

log = logging.getLogger(__name__)

FINETUNE_CONFIG = "finetune.toml"


def check_out(cfg: FinetuneConfig, flags: Flags) -> Path:
    """The output run dir, checked before any training: set, and new unless --overwrite."""
    if not cfg.out:
        raise ConfigError("finetune needs out=DIR for the new run dir (e.g. out=runs/x-sst2)")
    out = Path(cfg.out)
    if cfg.init and out.resolve() == Path(cfg.init).resolve():
        raise ConfigError(f"out={cfg.out} is the run being fine-tuned; choose a new directory")
    if out.exists() and any(out.iterdir()) and not flags.overwrite:
        raise ConfigError(f"{out} already exists; choose another out= or pass --overwrite")
    return out


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
