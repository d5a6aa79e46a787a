"""Intrinsic evaluation: loss, perplexity and bits-per-byte of a model on a token stream.

A split (all its shards, documents joined by end-of-text as in training) or a text file is one
stream. Windows of `window` tokens start every `stride` tokens; each target is scored once, in the
first window that reaches it, so with stride < window every target after the first window has at
least `window - stride` tokens of context (the Hugging Face perplexity recipe). Bits-per-byte is
total nats / (ln 2 * UTF-8 bytes of the scored targets), which does not depend on the tokenizer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from lmforge.errors import ConfigError, DataError
from lmforge.eval.config import EvalConfig
from lmforge.eval.likelihood import model_device
from lmforge.eval.report import write_report
from lmforge.train.loss import token_losses

if TYPE_CHECKING:
    from lmforge.run.rundir import LoadedRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamScore:
    """Totals over the scored targets of a stream."""

    nats: float
    tokens: int
    bytes: int

    @property
    def loss(self) -> float:
        return self.nats / max(self.tokens, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))  # exp overflows a float past ~709

    @property
    def bits_per_byte(self) -> float:
        return self.nats / (math.log(2) * self.bytes) if self.bytes else float("nan")


def plan_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored) per window: inputs tokens[start:end], targets start+1..end.

    Targets before `first scored` were scored by an earlier window with less context.
    """
    if stride > window:
        raise ValueError(f"stride {stride} > window {window} would skip tokens")
    plans = []
    scored_until = 0  # every target index <= scored_until is done (index 0 is never a target)
    start = 0
    while scored_until < n_tokens - 1:
        end = min(start + window, n_tokens - 1)
        plans.append((start, end, scored_until + 1))
        scored_until = end
        start += stride
    return plans


@torch.no_grad()
def score_stream(
    model: nn.Module,
    tokens: torch.Tensor,
    byte_lengths: Sequence[int] | torch.Tensor,
    window: int,
    stride: int | None = None,
    batch_size: int = 8,
) -> StreamScore:
    """Total nats, targets and target bytes of a 1-D token stream under sliding windows."""
    stride = stride or max(window // 2, 1)
    tokens = tokens.long().cpu()
    lengths = torch.as_tensor(byte_lengths, dtype=torch.long)
    plans = plan_windows(tokens.numel(), window, stride)
    device = model_device(model)
    was_training = model.training
    model.eval()
    nats, count, nbytes = 0.0, 0, 0
    try:
        for i in range(0, len(plans), batch_size):
            batch = plans[i : i + batch_size]
            width = max(end - start for start, end, _ in batch)
            inputs = torch.zeros(len(batch), width, dtype=torch.long)
            targets = torch.full((len(batch), width), -100, dtype=torch.long)  # -100: not scored
            for row, (start, end, first) in enumerate(batch):
                inputs[row, : end - start] = tokens[start:end]
                skip = first - (start + 1)  # targets already scored by an earlier window
                targets[row, skip : end - start] = tokens[first : end + 1]
            losses = token_losses(model(inputs.to(device)), targets.to(device))  # (B, T)
            scored = targets[targets != -100]
            nats += float(losses.sum().double())
            count += scored.numel()
            nbytes += int(lengths[scored].sum())
    finally:
        model.train(was_training)
    return StreamScore(nats, count, nbytes)


# ---------------------------------------------------------------------------------------------
# The intrinsic evaluation of a run


def evaluate_intrinsic(run: LoadedRun, cfg: EvalConfig) -> dict[str, float | int | str]:
    """Loss, perplexity and bits-per-byte of `run` on a data split or a text file.

    Writes `run_dir/eval/intrinsic.json|md` and returns the flat metrics.
    """
    tokens, source = _stream(run, cfg)
    if cfg.max_tokens is not None:
        tokens = tokens[: cfg.max_tokens]
    if tokens.numel() < 2:
        raise DataError(f"{source} holds {tokens.numel()} token(s); at least 2 are needed")
    window = cfg.window or getattr(run.model, "max_context", None) or run.config.seq_len
    context = getattr(run.model, "max_context", None)
    if context is not None and window > context:
        raise ConfigError(
            f"window={window} exceeds the model's context of {context} tokens; set window <= "
            f"{context}"
        )
    stride = cfg.stride or max(window // 2, 1)
    if stride > window:
        raise ConfigError(f"stride={stride} exceeds the window of {window} tokens; lower stride")
    log.info(
        "scoring %s tokens of %s (window %d, stride %d)", tokens.numel(), source, window, stride
    )
    lengths = torch.as_tensor(run.tokenizer.token_byte_lengths(), dtype=torch.long)
    score = score_stream(run.model, tokens, lengths, window, stride, cfg.batch_size)
    metrics: dict[str, float | int | str] = {
        "split": source,
        "loss": score.loss,
        "perplexity": score.perplexity,
        "bits_per_byte": score.bits_per_byte,
        "tokens": score.tokens,
        "bytes": score.bytes,
        "checkpoint": run.checkpoint_dir.name,
        "window": window,
        "stride": stride,
    }
    write_report(run.run_dir, "intrinsic", metrics)
    return metrics


def _stream(run: LoadedRun, cfg: EvalConfig) -> tuple[torch.Tensor, str]:
    """The token stream to score and its name (`val`, `train` or `text:<file>`)."""
    if cfg.text:
        path = Path(cfg.text)
        if not path.is_file():
            raise DataError(f"text file {path} does not exist; check text=...")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path} is not UTF-8 text; re-encode it as UTF-8") from None
        return torch.tensor(run.tokenizer.encode(text), dtype=torch.long), f"text:{path}"
    from lmforge.data.reader import DataDir

    data_path = cfg.data or run.config.data
    if not data_path or not Path(data_path).is_dir():
        raise DataError(
            f"the data dir of {run.run_dir} ({data_path}) is not found; "
            "pass data=DIR (a data dir with the same tokenizer) or text=FILE"
        )
    data = DataDir.open(data_path)
    if data.tokenizer.hash != run.tokenizer.hash:
        raise DataError(
            f"{data_path} was tokenised with a different tokenizer than {run.run_dir}; "
            "pass a matching data=DIR or use text=FILE"
        )
    data.shards(cfg.split)  # a DataError naming the splits there are, if this one is not
    total = data.num_tokens(cfg.split)
    stream = data.tokens(cfg.split, 0, min(cfg.max_tokens or total, total))
    return torch.from_numpy(stream.astype(np.int64)), cfg.split
