"""Next-token cross-entropy, shared by training, evaluation and fine-tuning.

Targets equal to `IGNORE_INDEX` (-100, PyTorch's convention) carry no loss: supervised fine-tuning
masks prompt tokens that way. The loss is computed in float32 whatever the autocast precision,
because a bf16 log-softmax over a large vocabulary loses the small probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean loss over the unmasked targets. logits (B, T, V), targets (B, T) -> scalar."""
    vocab = logits.size(-1)
    # (B, T, V) -> (B*T, V); upcast so the log-softmax runs in fp32.
    return F.cross_entropy(
        logits.reshape(-1, vocab).float(), targets.reshape(-1), ignore_index=ignore_index
    )


def token_losses(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Per-token loss in nats, 0 where masked. logits (B, T, V), targets (B, T) -> (B, T)."""
    vocab = logits.size(-1)
    flat = F.cross_entropy(
        logits.reshape(-1, vocab).float(),
        targets.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    )
    return flat.view(targets.shape)  # (B*T,) -> (B, T)
