"""SFT data plumbing: separate prompt/response encoding, cropping, loss masks, the batch source,
and validation loss counting only response tokens."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from lmforge.data.loader import TokenLoader
from lmforge.data.tokenizer import build_char
from lmforge.errors import CheckpointError
from lmforge.eval.generation import Example
from lmforge.finetune.sft import EncodedExample, SFTBatches, collate, encode_example
from lmforge.models import GPTConfig, build_model
from lmforge.train.distributed import detect
from lmforge.train.evaluate import validation_loss
from lmforge.train.interface import BatchSource, LanguageModelObjective, Objective
from lmforge.train.loss import IGNORE_INDEX, cross_entropy

TOK = build_char(["abcdefgh =?"], ["<|endoftext|>"])
EOT = TOK.eot_id


def test_encode_example_appends_eot_and_crops_the_prompt_left() -> None:
    ex = Example("abc =", " de", ("de",))
    enc, cut = encode_example(TOK, ex, max_len=16)
    assert not cut
    assert enc.prompt == TOK.encode("abc =") and enc.response == [*TOK.encode(" de"), EOT]
    enc, cut = encode_example(TOK, ex, max_len=5)  # 5 inputs, so 6 tokens in all
    assert cut and enc.response == [*TOK.encode(" de"), EOT]
    assert enc.prompt == TOK.encode(" =") and len(enc.prompt) + len(enc.response) == 6
    enc, cut = encode_example(TOK, Example("ab", "cdefgh", ("",)), max_len=3)
    assert cut and len(enc.prompt) == 1 and enc.response == TOK.encode("cde")


def test_collate_masks_prompt_and_padding() -> None:
    a = EncodedExample([1, 2, 3], [4, 5, EOT])
    b = EncodedExample([6], [7, EOT])
    x, y = collate([a, b], pad_id=EOT)
    assert x.tolist() == [[1, 2, 3, 4, 5], [6, 7, EOT, EOT, EOT]]
    M = IGNORE_INDEX
    assert y.tolist() == [[M, M, 4, 5, EOT], [7, EOT, M, M, M]]


def test_batches_are_seeded_resumable_and_cover_an_epoch() -> None:
    examples = [EncodedExample([i], [i, EOT]) for i in range(10)]
    source = SFTBatches(examples, batch_size=4, seed=3, shuffle=True, pad_id=EOT)
    seen = [source.next_batches()[0][0][:, 0].tolist() for _ in range(5)]
    flat = sum(seen, [])
    assert sorted(flat[:10]) == list(range(10))  # the first epoch visits every example once
    again = SFTBatches(examples, batch_size=4, seed=3, shuffle=True, pad_id=EOT)
    again.load_state_dict({"step": 3})
    assert again.next_batches()[0][0][:, 0].tolist() == seen[3]
    fixed = SFTBatches(examples, batch_size=4, seed=3, shuffle=False, pad_id=EOT)
    assert fixed.next_batches()[0][0][:, 0].tolist() == [0, 1, 2, 3]
    fewer = SFTBatches(examples[:9], batch_size=4, seed=3, shuffle=True, pad_id=EOT)
    with pytest.raises(CheckpointError, match="trained on 10 examples, these are 9"):
        fewer.load_state_dict(source.state_dict())


def test_sources_and_objective_meet_the_trainer_interface() -> None:
    examples = [EncodedExample([i], [i, EOT]) for i in range(10)]
    assert isinstance(SFTBatches(examples, 4, 0, True, EOT), BatchSource)
    tokens = torch.arange(1000, dtype=torch.int64).numpy() % 11
    assert isinstance(TokenLoader([tokens], seq_len=8, batch_size=2), BatchSource)
    assert isinstance(LanguageModelObjective(), Objective)


def test_validation_loss_counts_only_response_tokens() -> None:
    torch.manual_seed(0)
    model = build_model(
        GPTConfig(n_layers=1, n_heads=2, d_model=16, max_seq_len=16), TOK.vocab_size
    )
    examples = [EncodedExample([1, 2, 3, 4], [5, EOT]), EncodedExample([6], [7, 8, EOT])]
    source = SFTBatches(examples, batch_size=2, seed=0, shuffle=False, pad_id=EOT)
    result = validation_loss(
        model, source, 1, contextlib.nullcontext(), detect(), recurrent=False, byte_lengths=None
    )
    x, y = collate(examples, EOT)
    with torch.no_grad():
        direct = cross_entropy(model(x), y).item()  # the mean over the 5 response targets
    assert math.isclose(result["val_loss"], direct, rel_tol=1e-5)


def test_group_by_length_covers_each_epoch_with_less_padding() -> None:
    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (203,), generator=rng).tolist()
    # Example i is recognisable by its first token; its length varies.
    examples = [EncodedExample([i % 256], [1] * n + [EOT]) for i, n in enumerate(lengths)]

    def epoch(source: SFTBatches) -> tuple[list[int], int]:
        ids, padded = [], 0
        for _ in range(math.ceil(len(examples) / source.batch_size)):
            x, _ = source.next_batches()[0]
            ids += x[:, 0].tolist()
            padded += x.numel()
        return ids[: len(examples)], padded

    plain = SFTBatches(examples, batch_size=8, seed=1, shuffle=True, pad_id=EOT)
    grouped = SFTBatches(examples, 8, seed=1, shuffle=True, pad_id=EOT, group_by_length=True)
    grouped.GROUP_WINDOW = 5  # several windows in this small set
    plain_ids, plain_tokens = epoch(plain)
    grouped_ids, grouped_tokens = epoch(grouped)
    assert sorted(grouped_ids) == sorted(plain_ids) == sorted(i % 256 for i in range(203))
    assert grouped_ids != plain_ids
    assert grouped_tokens < 0.8 * plain_tokens  # rows of a batch have similar lengths
    # Seeded and resumable like the plain order.
    again = SFTBatches(examples, 8, seed=1, shuffle=True, pad_id=EOT, group_by_length=True)
    again.GROUP_WINDOW = 5
    again.load_state_dict({"step": 7})
    fresh = SFTBatches(examples, 8, seed=1, shuffle=True, pad_id=EOT, group_by_length=True)
    fresh.GROUP_WINDOW = 5
    for _ in range(7):
        fresh.next_batches()
    assert again.next_batches()[0][0].tolist() == fresh.next_batches()[0][0].tolist()
