"""The numpy char/byte encoders give exactly `tokenizers`' ids, on random Unicode."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import tokenizers

from lmforge.data.tokenizer import EOT, build_byte, build_char, train_bpe
from lmforge.data.vectorised import VectorEncoder, count_code_points

SPECIALS = [EOT, "<pad>", "<|im_start|>"]
# Pools the random strings draw from: ASCII, newlines/whitespace, Latin-1 and combining marks,
# CJK, astral (emoji, math), and fragments of the special tokens so near-misses occur.
POOLS = [
    [chr(c) for c in range(32, 127)],
    ["\n", "\r\n", "\t", " ", "  ", "\u00a0", "\u2028", "\x0b"],
    ["é", "e\u0301", "ß", "ø", "\u0300", "ÿ", "\u00ad"],
    ["東", "京", "語", "한", "ア"],
    ["😀", "👍🏽", "𝔘", "𐍈", "\U0010fffd", "🏳️‍🌈"],
    [*SPECIALS, "<|endof", "text|>", "<", "|>", "<pad", "<|im_"],
]


def _random_text(rng: random.Random, max_len: int = 60) -> str:
    return "".join(rng.choice(rng.choice(POOLS)) for _ in range(rng.randint(0, max_len)))


@pytest.mark.parametrize("kind", ["char", "char_capped", "byte"])
def test_ids_equal_tokenizers_on_random_unicode(kind):
    rng = random.Random(kind)
    training = [_random_text(rng, 200) for _ in range(20)]
    if kind == "byte":
        tok = build_byte(SPECIALS)
    else:  # characters outside the (capped) vocabulary must become <unk> like tokenizers does
        tok = build_char(training, SPECIALS, vocab_size=60 if kind == "char_capped" else None)
    assert tok.vector_encoder is not None
    # A fresh tokenizers object from the saved JSON: the reference, not lmforge's wrapper.
    reference = tokenizers.Tokenizer.from_str(tok.to_str())
    texts = [_random_text(rng) for _ in range(400)] + ["", EOT, EOT + EOT, "<|endoftext|>x"]
    for text in texts:
        expected = reference.encode(text, add_special_tokens=False).ids
        assert tok.encode_array(text).tolist() == expected, repr(text)
    if kind == "char_capped":
        assert any(tok.unk_id in tok.encode_array(t).tolist() for t in texts)


def test_not_used_where_it_would_differ():
    assert train_bpe(["hello world"] * 20, 300, [EOT]).vector_encoder is None  # merges
    data = json.loads(build_char(["abc"], [EOT]).to_str())
    for change in (
        {"normalizer": {"type": "Lowercase"}},
        {"model": {**data["model"], "unk_token": None}},  # tokenizers would drop unknown chars
        {"added_tokens": [{**data["added_tokens"][0], "lstrip": True}]},
        {"pre_tokenizer": {"type": "Whitespace"}},
    ):
        assert VectorEncoder.for_tokenizer({**data, **change}) is None, change


def test_count_code_points_equals_counter():
    rng = random.Random(3)
    texts = [_random_text(rng, 300) for _ in range(50)]
    counts = count_code_points(texts, batch_chars=500)  # several batches
    expected: dict[int, int] = {}
    for text in texts:
        for ch in text:
            expected[ord(ch)] = expected.get(ord(ch), 0) + 1
    found = np.flatnonzero(counts)
    assert dict(zip(found.tolist(), counts[found].tolist(), strict=True)) == expected
