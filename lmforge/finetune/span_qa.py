"""`lmforge finetune RUN task=squad qa.head=span`: extractive QA with a start/end head.

As BERT-style readers and Transformers' `*ForQuestionAnswering` do it: the input is the question,
then a window of the context; `SpanQAHead` gives start and end logits per token; the loss is the
cross-entropy of the answer's first and last token (a window without the answer points at
position 0, as Transformers' QA examples point at CLS). The windows (`qa.stride` tokens of
overlap) and the decoding (the best start <= end pair of at most `qa.max_answer_len` tokens, read
back as the context's characters, scored with SQuAD's EM/F1 beside the baselines) live in
`lmforge/eval/span_qa.py`, which `lmforge eval RUN task=squad` uses on the published run, so the
two verbs score a span run with the same code. Training runs through the Trainer (`SpanBatches`,
`SpanObjective`: dev F1 picks the best checkpoint) with the `sft.*` optimisation keys; LoRA
(`lora.rank`) works as for any fine-tuning.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import save_config
from lmforge.errors import CheckpointError, ConfigError
from lmforge.eval.report import markdown_table, write_report
from lmforge.eval.span_qa import (
    QAExample,
    SpanFeature,
    evaluate_span,
    make_features,
    predict_spans,
    read_examples,
)
from lmforge.eval.squad_metrics import squad_scores
from lmforge.finetune.config import FinetuneConfig
from lmforge.finetune.publish import (
    FINETUNE_CONFIG,
    check_out,
    discard,
    publish,
    resume_command,
    start_partial,
)
from lmforge.finetune.sft import sft_max_len, sft_train_config
from lmforge.models.heads import SPAN_DIR, SpanQAHead, pad_batch, save_span_head
from lmforge.run import checkpoint as ckpt
from lmforge.run import rundir
from lmforge.run.config import (
    TrainConfig,
)
from lmforge.runtime import autocast, resolve_dtype, seed_everything
from lmforge.train.interface import BatchSource, Validation

if TYPE_CHECKING:
    from lmforge.finetune.adapters import Adapter
    from lmforge.run.rundir import LoadedRun
    from lmforge.verb import Flags

log = logging.getLogger(__name__)

REPORT_NAME = "squad_span"


# ---------------------------------------------------------------------------------------------
# The Trainer's parts


@dataclass
class SpanBatch:
    tokens: torch.Tensor  # (B, T) right-padded
    lengths: torch.Tensor  # (B,)
    start: torch.Tensor  # (B,)
    end: torch.Tensor  # (B,)

    def to(self, device: torch.device) -> SpanBatch:
        return SpanBatch(*(t.to(device) for t in (self.tokens, self.lengths, self.start, self.end)))


class SpanBatches:
    """A `BatchSource` of windows: a seeded shuffle per epoch, resumable by step; unshuffled
    (validation) it keeps `examples` and `features` for decoding."""

    def __init__(
        self,
        features: list[SpanFeature],
        batch_size: int,
        seed: int,
        shuffle: bool,
        examples: list[QAExample] | None = None,
    ) -> None:
        if not features:
            raise ConfigError("no QA examples in a split; check the task's files")
        self.features, self.examples, self.seed, self.shuffle = features, examples, seed, shuffle
        self.batch_size = self.rows = min(batch_size, len(features))
        self.accum_steps = 1
        self.seq_len = max(len(f.ids) for f in features)
        self.steps_per_epoch = math.ceil(len(features) / self.batch_size)
        self.step = 0

    def _order(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            return np.random.default_rng((self.seed, epoch)).permutation(len(self.features))
        return np.arange(len(self.features))

    def next_batches(self) -> list[SpanBatch]:
        epoch, i = divmod(self.step, self.steps_per_epoch)
        picked = self._order(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        self.step += 1
        chosen = [self.features[j] for j in picked.tolist()]
        tokens, lengths = pad_batch([f.ids for f in chosen])
        start = torch.tensor([f.start for f in chosen], dtype=torch.long)
        end = torch.tensor([f.end for f in chosen], dtype=torch.long)
        return [SpanBatch(tokens, lengths, start, end)]

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seed": self.seed, "n": len(self.features)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("n", len(self.features)) != len(self.features):
            raise CheckpointError(
                f"the checkpoint was trained on {state['n']} windows, these are "
                f"{len(self.features)}; resume with the same task files and qa/sft keys"
            )
        self.step = int(state["step"])


class SpanObjective:
    """Mean cross-entropy of the start and end positions (pads masked); validation decodes the
    dev questions and reports `dev_f1` (the best is kept), `dev_em` and `dev_loss`."""

    best_metric = "dev_f1"
    higher_is_better = True

    def __init__(self, max_answer_len: int) -> None:
        self.max_answer_len = max_answer_len

    def to_device(self, batch: SpanBatch, device: torch.device) -> SpanBatch:
        return batch.to(device)

    def forward(self, model: nn.Module, batch: SpanBatch, cache: Any = None) -> Any:
        return model(batch.tokens)

    def loss(self, output: Any, batch: SpanBatch) -> torch.Tensor:
        start, end = output
        positions = torch.arange(batch.tokens.size(1), device=batch.tokens.device)
        pads = positions[None, :] >= batch.lengths[:, None]  # (B, T)
        start, end = start.masked_fill(pads, -1e4), end.masked_fill(pads, -1e4)
        return (F.cross_entropy(start, batch.start) + F.cross_entropy(end, batch.end)) / 2

    def tokens(self, batch: SpanBatch) -> int:
        return batch.tokens.numel()

    @torch.no_grad()
    def validate(self, model: nn.Module, source: BatchSource, how: Validation) -> dict[str, float]:
        assert isinstance(source, SpanBatches) and source.examples is not None
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        device = next(model.parameters()).device
        source.step = 0
        nats, n = 0.0, 0
        for _ in range(source.steps_per_epoch):
            for batch in source.next_batches():
                batch = batch.to(device)
                with how.amp:
                    output = model(batch.tokens)
                nats += float(self.loss(output, batch)) * len(batch.start)
                n += len(batch.start)
        with how.amp:
            preds = predict_spans(model, source.examples, source.features, self.max_answer_len)
        scores = squad_scores(preds, [list(e.answers) for e in source.examples])
        for module, training in modes:
            module.training = training
        return {"dev_f1": scores["f1"], "dev_em": scores["exact_match"], "dev_loss": nats / n}

    def describe(self, metrics: dict[str, float]) -> str:
        return f"dev_f1 {metrics['dev_f1']:.2f}  dev_em {metrics['dev_em']:.2f}"


def span_train_config(cfg: FinetuneConfig, run: LoadedRun, out: Path, n_train: int) -> TrainConfig:
    """The TrainConfig of a span-QA fine-tuning: SFT's, from the same `sft.*` keys, with a batch
    no larger than the training set and one dev batch per evaluation."""
    batch = min(cfg.sft.batch_size, n_train)
    return sft_train_config(run, cfg, out, n_train, batch_size=batch, eval_batches=1)


# ---------------------------------------------------------------------------------------------
# The fine-tuning


def finetune_span_qa(
    task: Any, run: LoadedRun, cfg: FinetuneConfig, flags: Flags, adapter: Adapter | None = None
) -> int:
    """Train a span head (and the body, or its adapters) on `task`'s train split; select on
    dev F1; score the test split; publish `cfg.out` with the head in `span_qa/`."""
    from lmforge.train.optim import build_optimizer
    from lmforge.train.state import TrainState, restore_model_weights
    from lmforge.train.trainer import Trainer

    if not hasattr(task, "articles"):
        raise ConfigError(
            f"qa.head=span needs a SQuAD-format task (task=squad), not task={task.name}"
        )
    out = check_out(cfg, flags)
    max_len = sft_max_len(run, cfg)
    tokenizer, device = run.tokenizer, next(run.model.parameters()).device
    train = read_examples(task, "train", cfg.task)[: cfg.sft.limit_train]
    dev = read_examples(task, "dev", cfg.task)
    train_features = make_features(train, tokenizer, max_len, cfg.qa.stride)
    dev_features = make_features(dev, tokenizer, max_len, cfg.qa.stride)
    log.info(
        "span QA on %s: %d train questions (%d windows of <= %d tokens), %d dev",
        task.name,
        len(train),
        len(train_features),
        max_len,
        len(dev),
    )
    work, resume = start_partial(out, flags)
    seed_everything(cfg.seed)
    model = SpanQAHead(run.model).to(device).train()
    state = TrainState()
    if resume is not None:
        restore_model_weights(model, resume.checkpoint)
        state = TrainState.from_dict(resume.state)
    config = span_train_config(cfg, run, out, len(train_features))
    from lmforge.train.interface import Components

    batch = config.train.batch_size
    parts = Components(
        config,
        model,
        build_optimizer(model, config.optim, device),
        SpanBatches(train_features, batch, cfg.seed, True),
        SpanBatches(dev_features, 2 * batch, cfg.seed, False, dev),
        device,
        tokenizer=tokenizer,
        objective=SpanObjective(cfg.qa.max_answer_len),
        dtype=resolve_dtype(cfg.dtype),
        state=state,
    )
    trainer = Trainer(parts, work, final_out=out, resume_hint=resume_command(cfg, flags))
    if resume is not None:
        trainer.restore(resume.checkpoint)
    with rundir.RunLock(work):
        save_config(config, work / rundir.CONFIG_FILE)
        save_config(cfg, work / FINETUNE_CONFIG)
        code = 0 if trainer.state.finished else trainer.fit()
    if code != 0:
        log.warning("fine-tuning stopped early; the partial run dir is %s", work)
        return code
    _load_best(model, work)
    test = read_examples(task, "test", cfg.task)[: cfg.sft.eval_limit]
    with autocast(device, resolve_dtype(cfg.dtype)):
        metrics = _test_report(model, test, tokenizer, max_len, cfg)
    metrics |= {"dev_f1": trainer.state.best_val or 0.0, "steps": trainer.state.step}
    meta = {"task": task.name, "max_len": max_len, "stride": cfg.qa.stride}
    meta |= {"max_answer_len": cfg.qa.max_answer_len, "init": str(run.run_dir)}
    _write_run(out, work, run, model, cfg, flags, meta, metrics, adapter)
    discard(work)
    print(markdown_table({out.name: metrics}, title=f"{task.name} (span head)"))
    return 0


def _test_report(
    model: SpanQAHead, examples: list[QAExample], tokenizer: Any, max_len: int, cfg: FinetuneConfig
) -> dict[str, Any]:
    """EM/F1 of the span head on `examples` beside the baselines (a report row): the same
    decoding, windows and batches as `lmforge eval RUN task=squad` on the published run."""
    _, scores = evaluate_span(
        model,
        examples,
        tokenizer,
        max_len,
        cfg.qa.stride,
        cfg.qa.max_answer_len,
        cfg.decode.batch_size,
    )
    return {
        "task": REPORT_NAME,
        "method": "span head" + (" (LoRA)" if cfg.lora.enabled else ""),
        "scoring": "span",
        "examples": len(examples),
        **scores,
    }


def _load_best(model: SpanQAHead, work: Path) -> None:
    from lmforge.train.state import restore_model_weights

    root = work / rundir.CHECKPOINTS_DIR
    name = ckpt.read_pointer(root, ckpt.BEST) or ckpt.read_pointer(root, ckpt.LATEST)
    if name is None:
        raise CheckpointError(f"{root} holds no checkpoint to load the fine-tuned weights from")
    restore_model_weights(model, root / name)


def _write_run(
    out: Path,
    work: Path,
    run: LoadedRun,
    model: SpanQAHead,
    cfg: FinetuneConfig,
    flags: Flags,
    meta: dict[str, Any],
    metrics: dict[str, Any],
    adapter: Adapter | None,
) -> None:
    """The published run dir: the body (or its adapter), `span_qa/`, the test report and the
    training's metrics, built beside `out` and renamed into place."""
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        rundir.create_run_dir(
            tmp,
            model.body,
            run.model_config,
            run.tokenizer,
            config=run.config.model_copy(update={"out": str(out)}),
            step=int(metrics["steps"]),
            overwrite=True,
            info={"finetune": {"kind": "span_qa", "task": meta["task"], "init": meta["init"]}},
            adapter=adapter.as_tuple() if adapter is not None else None,
        )
        save_config(cfg, tmp / FINETUNE_CONFIG)
        save_span_head(model, tmp / SPAN_DIR, meta)
        write_report(tmp, REPORT_NAME, metrics, {}, column=out.name)
        for name in (rundir.METRICS_FILE, rundir.PLOTS_DIR):
            source = work / name
            if source.is_dir():
                shutil.copytree(source, tmp / name)
            elif source.is_file():
                shutil.copy2(source, tmp / name)
        publish(tmp, out, flags)
    finally:
        discard(tmp)
