"""TokenLoader: deterministic, resumable, rank slices equal accumulation, contiguous streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.data.loader import TokenLoader
from lmforge.errors import DataError


def shards():
    tokens = np.arange(1000, dtype=np.uint16) % 251
    return [tokens[:300], tokens[300:310], tokens[310:]]  # a tiny middle shard to cross


def collect(loader, steps):
    return [[(x.clone(), y.clone()) for x, y in loader.next_batches()] for _ in range(steps)]


def test_windows_are_shifted_targets_and_deterministic():
    a = TokenLoader(shards(), seq_len=16, batch_size=4, seed=7)
    b = TokenLoader(shards(), seq_len=16, batch_size=4, seed=7)
    for (xa, ya), (xb, yb) in zip(a.next_batches(), b.next_batches(), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.dtype == torch.int64 and xa.shape == (4, 16)
        assert torch.equal(xa[:, 1:], ya[:, :-1])
        # arange data: every window is consecutive (mod 251) even across shard borders
        assert torch.all((ya - xa) % 251 == 1)
    c = TokenLoader(shards(), seq_len=16, batch_size=4, seed=8)
    assert not torch.equal(c.next_batches()[0][0], a.next_batches()[0][0])


@pytest.mark.parametrize("sequential", [False, True])
def test_resume_from_state_dict_continues_exactly(sequential):
    full = TokenLoader(shards(), 16, 4, seed=1, sequential=sequential)
    expected = collect(full, 6)
    first = TokenLoader(shards(), 16, 4, seed=1, sequential=sequential)
    collect(first, 3)
    resumed = TokenLoader(shards(), 16, 4, seed=1, sequential=sequential)
    resumed.load_state_dict(first.state_dict())
    for got, want in zip(collect(resumed, 3), expected[3:], strict=True):
        assert torch.equal(got[0][0], want[0][0])


@pytest.mark.parametrize("sequential", [False, True])
def test_two_ranks_see_the_rows_of_two_accumulation_steps(sequential):
    single = TokenLoader(shards(), 8, 2, accum_steps=2, seed=3, sequential=sequential)
    rank0 = TokenLoader(shards(), 8, 2, world_size=2, rank=0, seed=3, sequential=sequential)
    rank1 = TokenLoader(shards(), 8, 2, world_size=2, rank=1, seed=3, sequential=sequential)
    for _ in range(3):
        (m0, m1), (r0,), (r1,) = single.next_batches(), rank0.next_batches(), rank1.next_batches()
        assert torch.equal(m0[0], r0[0]) and torch.equal(m1[0], r1[0])
        assert not torch.equal(r0[0], r1[0])


def test_sequential_rows_are_contiguous_streams():
    loader = TokenLoader(shards(), 8, 3, sequential=True)
    ((x1, _),) = loader.next_batches()
    ((x2, _),) = loader.next_batches()
    # Each row's second window starts where its first ended (truncated BPTT carries state).
    assert torch.all((x2[:, 0] - x1[:, -1]) % 251 == 1)


def test_too_little_data_is_a_clear_error():
    with pytest.raises(DataError, match="seq_len"):
        TokenLoader([np.arange(10, dtype=np.uint16)], seq_len=16, batch_size=1, split="val")
    with pytest.raises(DataError, match="streams"):
        TokenLoader([np.arange(100, dtype=np.uint16)], 16, 8, sequential=True)
