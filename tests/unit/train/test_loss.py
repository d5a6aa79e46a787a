"""Cross-entropy: fp32 maths, masked targets ignored, per-token losses agree with the mean."""

from __future__ import annotations

import torch

from lmforge.train.loss import IGNORE_INDEX, cross_entropy, token_losses


def test_masked_targets_carry_no_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    masked = targets.clone()
    masked[:, :2] = IGNORE_INDEX
    per_token = token_losses(logits, targets)
    expected = per_token[:, 2:].mean()
    assert torch.allclose(cross_entropy(logits, masked), expected)
    assert torch.all(token_losses(logits, masked)[:, :2] == 0)


def test_matches_log_softmax_by_hand_and_upcasts_bf16():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 7)
    targets = torch.tensor([[1, 6, 0]])
    by_hand = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).mean()
    assert torch.allclose(cross_entropy(logits, targets), by_hand)
    assert cross_entropy(logits.bfloat16(), targets).dtype == torch.float32
