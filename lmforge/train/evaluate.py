"""What the trainer measures between steps: validation loss (and bits per byte), and a sample.

Validation reads a fixed set of windows (the first `eval.batches` steps of a sequential loader
over the val split), so every evaluation of a run, and of a resumed run, scores the same tokens.
The full-split evaluator with sliding windows is `lmforge eval`'s job (lmforge/eval/).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from lmforge.data.loader import TokenLoader
from lmforge.infer.generate import generate
from lmforge.run.config import SampleSection
from lmforge.train.distributed import DistEnv, all_reduce_mean
from lmforge.train.loss import IGNORE_INDEX, token_losses


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    loader: TokenLoader,
    batches: int,
    amp: contextlib.AbstractContextManager,
    env: DistEnv,
    recurrent: bool,
    byte_lengths: torch.Tensor | None = None,
) -> dict[str, float]:
    """`val_loss` (nats/token), `val_ppl` and, given token byte lengths, `val_bpb`."""
    was_training = model.training
    model.eval()
    loader.step = 0
    device = next(model.parameters()).device
    carry = [None] * loader.accum_steps
    if recurrent:
        carry = [model.init_cache(loader.batch_size, device=device) for _ in carry]
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # nats, tokens, bytes
    for _ in range(batches):
        for m, (x, y) in enumerate(loader.next_batches()):
            x, y = x.to(device), y.to(device)
            with amp:
                logits = model(x, cache=carry[m])
            sums[0] += token_losses(logits, y).double().sum()
            # Masked targets (IGNORE_INDEX: SFT prompts and padding) carry no loss and no bytes.
            scored = y != IGNORE_INDEX
            sums[1] += scored.sum()
            if byte_lengths is not None:
                sums[2] += byte_lengths.to(device)[y.clamp(min=0)][scored].sum()
    # Each rank scored its own rows; the mean of equal-sized sums is the global mean.
    all_reduce_mean(sums, env)
    model.train(was_training)
    nats, tokens, nbytes = (float(v) for v in sums)
    result = {"val_loss": nats / tokens, "val_ppl": math.exp(min(nats / tokens, 50.0))}
    if nbytes > 0:
        result["val_bpb"] = nats / (math.log(2) * nbytes)
    return result


@torch.no_grad()
def sample_text(
    model: nn.Module,
    tokenizer,  # noqa: ANN001 - lmforge.data.tokenizer.Tokenizer
    cfg: SampleSection,
    seed: int,
    amp: contextlib.AbstractContextManager,
) -> str:
    """The prompt and a continuation, sampled with a fixed seed (so samples compare over time)."""
    was_training = model.training
    model.eval()
    prompt_ids = tokenizer.encode(cfg.prompt) if cfg.prompt else [tokenizer.eot_id]
    with amp:
        new = generate(
            model,
            prompt_ids,
            cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            seed=seed,
        )
    model.train(was_training)
    return cfg.prompt + tokenizer.decode(new)


def byte_lengths(tokenizer) -> torch.Tensor | None:  # noqa: ANN001 - a Tokenizer
    """UTF-8 bytes per token id (for bits per byte), or None for a tokenizer that cannot say."""
    if not hasattr(tokenizer, "token_byte_lengths"):
        return None
    return torch.as_tensor(tokenizer.token_byte_lengths(), dtype=torch.long)
