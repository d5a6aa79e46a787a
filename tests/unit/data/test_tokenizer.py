"""Tokenizers: every kind is a tokenizer.json that HF loads and runs exactly as lmforge does."""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest
import tokenizers
from lmforge_testing import require

from lmforge.data.tokenizer import (
    EOT,
    UNK,
    Tokenizer,
    TokenizerConfig,
    build_byte,
    build_char,
    build_tokenizer,
    load_gpt2,
    split_for_encoding,
    train_bpe,
)
from lmforge.errors import ConfigError

CORPUS = (
    "The quick brown fox jumps over the lazy dog.\n"
    "Don't stop: it's 2024 and we're 100% sure.\n\n"
    "Grüße aus Köln — naïve café, 東京 and 😀 emoji.\n"
) * 20

# Code points chosen to stress byte-level BPE: ASCII, Latin-1, combining marks, CJK, emoji, odd
# spaces and controls, and characters outside the BMP.
_RANGES = [
    (0x20, 0x7E),
    (0x09, 0x0D),
    (0xA0, 0xFF),
    (0x0300, 0x036F),
    (0x0400, 0x04FF),
    (0x2000, 0x206F),
    (0x3040, 0x30FF),
    (0x4E00, 0x4FFF),
    (0x1F300, 0x1F6FF),
    (0x10000, 0x1007F),
]


def random_text(rng: random.Random, length: int) -> str:
    chars = []
    for _ in range(length):
        lo, hi = rng.choice(_RANGES)
        chars.append(chr(rng.randint(lo, hi)))
    return "".join(chars)


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return train_bpe([CORPUS], vocab_size=320, specials=[EOT], min_frequency=2)


def test_char_vocab_is_tinyshakespeare_chars_plus_specials(shared_data):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    tok = build_char([text], [EOT])
    assert len(set(text)) == 65
    assert tok.vocab_size == 65 + 2  # <|endoftext|>, <unk>
    assert tok.special_tokens == {EOT: 65, UNK: 66}
    # Same ids as nanoGPT's stoi: characters sorted by code point.
    chars = sorted(set(text))
    assert tok.encode(text[:1000]) == [chars.index(c) for c in text[:1000]]
    assert tok.decode(tok.encode(text[:5000])) == text[:5000]


def test_char_unknown_and_cap():
    tok = build_char(["aaabbc"], [EOT], vocab_size=4)  # 2 specials + the 2 most frequent chars
    assert tok.kind == "char"
    assert tok.encode("abcz") == [0, 1, tok.unk_id, tok.unk_id]
    assert tok.decode(tok.encode("ab")) == "ab"
    with pytest.raises(ConfigError, match="vocab_size=2 is too small"):
        build_char(["abc"], [EOT], vocab_size=2)


def test_byte_level_is_exact_for_any_text():
    tok = build_byte([EOT])
    assert tok.vocab_size == 257 and tok.eot_id == 256
    rng = random.Random(0)
    for _ in range(20):
        text = random_text(rng, 200)
        ids = tok.encode(text)
        assert ids == list(text.encode("utf-8"))
        assert tok.decode(ids) == text
    with pytest.raises(ConfigError, match="256 bytes"):
        build_byte([EOT], vocab_size=200)


def test_bpe_round_trips_random_unicode_through_hf_file(bpe, tmp_path):
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    # The saved file, loaded by plain HF `tokenizers`, must behave exactly like lmforge.
    hf = tokenizers.Tokenizer.from_file(str(path))
    rng = random.Random(1)
    for i in range(60):
        text = random_text(rng, rng.randint(0, 300))
        if i % 7 == 0:
            text += EOT + "e\u0301 \U0001f600"  # a literal special token, combining mark, emoji
        ids = bpe.encode(text)
        assert hf.encode(text, add_special_tokens=False).ids == ids
        assert bpe.decode(ids) == text
        assert hf.decode(ids, skip_special_tokens=False) == text


def test_bpe_vocab_size_and_specials(bpe):
    assert bpe.vocab_size == 320
    assert bpe.eot_id == 319  # specials come after the trained vocabulary, as in GPT-2
    tok = train_bpe([CORPUS], 300, [EOT, "<pad>"])
    assert tok.pad_id == 299 and tok.special_tokens == {EOT: 298, "<pad>": 299}
    with pytest.raises(ConfigError, match="tokenizer.vocab_size=100 is too small"):
        train_bpe([CORPUS], 100, [EOT])


def test_config_always_has_eot_first():
    cfg = TokenizerConfig(special_tokens=["<pad>", EOT, "<pad>"])
    assert cfg.special_tokens == [EOT, "<pad>"]


def test_gpt2_files_match_tiktoken(shared_data, tmp_path):
    tok = load_gpt2(shared_data / "gpt2_bpe", [EOT])
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.eot_id == 50256 and tok.vocab_size == 50257
    require(importlib.util.find_spec("tiktoken") is not None, "tiktoken not installed")
    import tiktoken
    import tiktoken.load as tiktoken_load

    ranks = tiktoken_load.data_gym_to_mergeable_bpe_ranks(
        str(shared_data / "gpt2_bpe" / "vocab.bpe"), str(shared_data / "gpt2_bpe" / "encoder.json")
    )
    from tiktoken_ext.openai_public import r50k_pat_str

    enc = tiktoken.Encoding("gpt2-local", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                            special_tokens={EOT: 50256})  # fmt: skip
    rng = random.Random(2)
    for _ in range(20):
        text = random_text(rng, 150) + " " + CORPUS[: rng.randint(0, 200)]
        assert tok.encode(text) == enc.encode_ordinary(text)
        assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path / "tokenizer.json")
    assert Tokenizer.from_file(tmp_path).hash == tok.hash


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_saved_file_reloads_identically(kind, tmp_path):
    tok = build_tokenizer(TokenizerConfig(kind=kind, vocab_size=300), [CORPUS])
    tok.save(tmp_path / "tokenizer.json")
    again = Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert again.kind == kind and again.hash == tok.hash
    assert again.encode(CORPUS) == tok.encode(CORPUS)


def test_file_kind_adds_missing_eot(tmp_path):
    inner = tokenizers.Tokenizer(tokenizers.models.BPE({"a": 0, "b": 1}, []))
    inner.save(str(tmp_path / "tokenizer.json"))
    tok = build_tokenizer(TokenizerConfig(kind="file", path=str(tmp_path)))
    assert tok.eot_id == 2 and tok.kind == "file"
    with pytest.raises(ConfigError, match="needs tokenizer.path"):
        build_tokenizer(TokenizerConfig(kind="gpt2"))


def test_token_byte_lengths_sum_to_text_bytes(bpe):
    lengths = bpe.token_byte_lengths()
    assert lengths.shape == (bpe.vocab_size,) and lengths[bpe.eot_id] == 0
    text = random_text(random.Random(3), 500)
    assert int(lengths[np.asarray(bpe.encode(text))].sum()) == len(text.encode("utf-8"))


def _chunk_alphabet_text(rng: random.Random, length: int) -> str:
    # Dense in the characters that decide where cuts are safe: spaces, newlines, CR, odd
    # whitespace, apostrophes, digits and punctuation.
    pieces = [" ", "\n", "\r\n", "\t", "\u00a0", "\u2028", "\x1c", "'s", "'", "9", ".", "-"]
    words = ["the", "fox", "Köln", "東京", "😀", "don", "x", "42"]
    return "".join(rng.choice(pieces if rng.random() < 0.45 else words) for _ in range(length))


def test_chunked_encoding_equals_whole_encoding(bpe, shared_data):
    gpt2 = load_gpt2(shared_data / "gpt2_bpe", [EOT])
    rng = random.Random(4)
    for _ in range(30):
        text = _chunk_alphabet_text(rng, 400)
        pieces = split_for_encoding(text, rng.randint(5, 40))
        assert "".join(pieces) == text
        assert len(pieces) > 1
        for tok in (bpe, gpt2):
            chunked = [i for piece in pieces for i in tok.encode(piece)]
            assert chunked == tok.encode(text)


def test_split_keeps_uncuttable_text_whole():
    assert split_for_encoding("x" * 100, 10) == ["x" * 100]
    assert split_for_encoding("short", 10) == ["short"]
