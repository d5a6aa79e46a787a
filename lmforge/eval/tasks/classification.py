"""Text classification tasks: the generic `classification` task and the family sst2/trec share.

A `ClassificationSpec` is the task definition (files, labels, readable names, prompt template,
verbalisers); `ClassificationTask` turns it into the two evaluations of the `Task` protocol:
few-shot by likelihood on a language model run (`lmforge eval`), and a fine-tuned classifier
(`lmforge finetune`, whose run dir `eval` then scores with its head). Readers: `readers.py`. Each
report carries the majority and the bag-of-words baselines (`baselines.py`) on the same splits.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmforge.errors import ConfigError, DataError
from lmforge.eval.baselines import bag_of_words_baseline
from lmforge.eval.config import EvalConfig, TaskSection
from lmforge.eval.fewshot import Prompting, build_contexts, classify
from lmforge.eval.metrics import accuracy, confusion_matrix, macro_f1, majority_accuracy
from lmforge.eval.report import save_confusion_png, write_report
from lmforge.eval.tasks.files import task_file
from lmforge.eval.tasks.readers import label_ids, read_labelled, sort_labels
from lmforge.models.heads import load_head, predict
from lmforge.run.rundir import CLASSIFIER_DIR

if TYPE_CHECKING:
    from lmforge.run.rundir import LoadedRun

log = logging.getLogger(__name__)

# A held-out dev set is part of the data, not of a run: with the run's seed, `lmforge eval` (seed
# 1234) and `lmforge finetune` (1337) held out different dev sets of TREC, so the same test split
# got two different bag-of-words baselines (their C was chosen on different dev sets).
DEV_HOLDOUT_SEED = 0


@dataclass(frozen=True)
class ClassificationSpec:
    """The definition of one classification task; `task.*` keys override the optional parts."""

    name: str
    dataset: str | None = None  # folder under the shared data dir, for built-in tasks
    train_file: str | None = "train.txt"
    dev_file: str | None = "dev.txt"  # None: hold `dev_fraction` of train out as dev
    test_file: str | None = "test.txt"
    labels: tuple[str, ...] | None = None  # raw labels in class order (None: from the data)
    label_names: tuple[str, ...] | None = None  # readable names for reports
    verbalizers: tuple[str, ...] | None = None  # words scored few-shot (None: label names)
    template: str = "Text: {text}\nLabel:"
    dev_fraction: float = 0.1


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: list[int]


@dataclass(frozen=True)
class ClassificationData:
    """A task's data, resolved: splits (None when not needed), labels and prompting."""

    train: Split | None
    dev: Split | None
    test: Split | None
    labels: list[str]
    label_names: list[str]
    prompting: Prompting


class ClassificationTask:
    """A `Task` of kind classification built from a `ClassificationSpec`."""

    kind: Literal["classification"] = "classification"

    def __init__(self, spec: ClassificationSpec) -> None:
        self.spec = spec
        self.name = spec.name

    # -- data ------------------------------------------------------------------------------------

    def load(self, cfg: TaskSection, splits: tuple[str, ...]) -> ClassificationData:
        """Read the requested splits; a missing dev split is held out from train, the same
        examples for every run (`DEV_HOLDOUT_SEED`)."""
        spec = self.spec
        paths = {split: self._path(cfg, split) for split in ("train", "test") if split in splits}
        dev_from_train = False
        if "dev" in splits:
            dev_path = self._dev_path(cfg)
            dev_from_train = dev_path is None
            if dev_path is not None:
                paths["dev"] = dev_path
            elif "train" not in paths:
                paths["train"] = self._path(cfg, "train")
        rows = {
            split: read_labelled(path, cfg.format, cfg.text_field, cfg.label_field)
            for split, path in paths.items()
        }
        labels = list(
            cfg.labels
            or spec.labels
            or sort_labels([r.label for r in rows.get("train") or next(iter(rows.values()))])
        )
        data = {
            s: Split([r.text for r in rows[s]], label_ids(rows[s], labels, paths[s])) for s in rows
        }
        if dev_from_train:
            data["train"], data["dev"] = _hold_out(data["train"], spec.dev_fraction)
        names = list(spec.label_names or labels) if not cfg.labels else list(labels)
        verbalizers = list(cfg.verbalizers or spec.verbalizers or names)
        if len(verbalizers) != len(labels):
            raise ConfigError(
                f"task.verbalizers has {len(verbalizers)} entries for {len(labels)} labels "
                f"({', '.join(labels)}); give one word per label"
            )
        prompting = Prompting(cfg.template or spec.template, verbalizers, cfg.target_delimiter)
        return ClassificationData(
            data.get("train"), data.get("dev"), data.get("test"), labels, names, prompting
        )

    def _dev_path(self, cfg: TaskSection) -> Path | None:
        """The dev file, or None to hold dev out of train (no dev.txt, or none configured)."""
        if cfg.dev:
            return self._path(cfg, "dev")
        try:
            return None if self.spec.dev_file is None else self._path(cfg, "dev")
        except DataError:
            return None

    def _path(self, cfg: TaskSection, split: str) -> Path:
        filename = getattr(self.spec, f"{split}_file")
        explicit = getattr(cfg, split)
        return task_file(self.name, split, explicit, cfg.dir, self.spec.dataset, filename)

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, run: LoadedRun, cfg: EvalConfig) -> dict[str, float | int | str]:
        """Few-shot by likelihood on an LM run; the fine-tuned head on a `finetune` run."""
        head_dir = run.run_dir / CLASSIFIER_DIR
        if (head_dir / "classifier.json").is_file():
            return self._evaluate_head(run, cfg, head_dir)
        data = self.load(cfg.task, ("train", "test") if cfg.shots else ("test",))
        test = _limit(data.test, cfg.limit)
        pool = list(zip(data.train.texts, data.train.labels, strict=True)) if data.train else []
        contexts = build_contexts(test.texts, data.prompting, cfg.shots, pool, cfg.seed)
        preds, preds_norm = classify(
            run.model, run.tokenizer, contexts, data.prompting, cfg.batch_size
        )
        metrics = {
            "task": self.name,
            "method": f"{cfg.shots}-shot",
            "checkpoint": run.checkpoint_dir.name,
        }
        metrics.update(_scores(test.labels, preds))
        metrics["acc_norm"] = accuracy(test.labels, preds_norm)
        metrics.update(self._bow(cfg.task, test))
        self._write(run.run_dir, metrics, test.labels, preds, data.label_names)
        return metrics

    def _bow(self, task_cfg: TaskSection, test: Split) -> dict[str, float | str]:
        """The bag-of-words baseline on this task's train/dev splits, scored on `test`."""
        try:
            data = self.load(task_cfg, ("train", "dev"))
        except (DataError, ConfigError) as exc:
            log.info("no bag-of-words baseline: %s", exc)
            return {}
        assert data.train is not None and data.dev is not None
        return bag_of_words_baseline(
            (data.train.texts, data.train.labels),
            (data.dev.texts, data.dev.labels),
            (test.texts, test.labels),
        )

    def _evaluate_head(
        self, run: LoadedRun, cfg: EvalConfig, head_dir: Path
    ) -> dict[str, float | int | str]:

        model, meta = load_head(run.model, head_dir)
        task_cfg = cfg.task
        if task_cfg.labels is None and self.spec.labels is None:
            task_cfg = task_cfg.model_copy(update={"labels": meta["labels"]})
        data = self.load(task_cfg, ("test",))
        if data.labels != meta["labels"]:
            raise ConfigError(
                f"{run.run_dir} classifies labels {meta['labels']} but task '{self.name}' has "
                f"{data.labels}; evaluate it on the task it was fine-tuned for ({meta['task']})"
            )
        test = _limit(data.test, cfg.limit)
        ids = encode_examples(run.tokenizer, test.texts, meta["max_len"])
        preds = predict(model, ids, cfg.batch_size)
        metrics = {"task": self.name, "method": "finetuned", "checkpoint": run.checkpoint_dir.name}
        metrics.update(_scores(test.labels, preds))
        metrics.update(self._bow(task_cfg, test))
        self._write(run.run_dir, metrics, test.labels, preds, data.label_names)
        return metrics

    def _write(
        self,
        run_dir: Path,
        metrics: dict[str, float | int | str],
        y_true: list[int],
        y_pred: list[int],
        names: list[str],
    ) -> None:
        matrix = confusion_matrix(y_true, y_pred, len(names))
        png = run_dir / "eval" / f"{self.name}_confusion.png"
        title = f"{self.name} ({metrics['method']}): acc {float(metrics['acc']):.3f}"
        save_confusion_png(matrix, names, png, title)
        write_report(run_dir, self.name, metrics, {"labels": names, "confusion_matrix": matrix})


def _scores(y_true: list[int], y_pred: list[int]) -> dict[str, float | int]:
    return {
        "n": len(y_true),
        "acc": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "majority_acc": majority_accuracy(y_true),
    }


def _limit(split: Split | None, limit: int | None) -> Split:
    if split is None:
        raise DataError("the task has no test split; set task.test=FILE")
    if limit is None:
        return split
    return Split(split.texts[:limit], split.labels[:limit])


def _hold_out(train: Split, fraction: float) -> tuple[Split, Split]:
    """Split off a fixed `fraction` of train as dev (for sets that ship without one)."""
    order = list(range(len(train.texts)))
    random.Random(DEV_HOLDOUT_SEED).shuffle(order)
    n_dev = max(1, int(len(order) * fraction))
    if n_dev >= len(order):
        raise DataError(f"{len(order)} training examples are too few to hold out a dev set")
    log.info("no dev file: holding out %d of %d training examples as dev", n_dev, len(order))

    def pick(idx: list[int]) -> Split:
        return Split([train.texts[i] for i in idx], [train.labels[i] for i in idx])

    return pick(sorted(order[n_dev:])), pick(sorted(order[:n_dev]))


def encode_examples(tokenizer: Any, texts: list[str], max_len: int) -> list[list[int]]:
    """Token ids per text, cut to `max_len - 1`, then end-of-text (a fixed last token to pool)."""
    return [ids[: max_len - 1] + [tokenizer.eot_id] for ids in tokenizer.encode_batch(texts)]


TASK = ClassificationTask(ClassificationSpec(name="classification", template="{text}\nLabel:"))
