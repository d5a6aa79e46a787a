"""Incremental detokenisation: streamed pieces add up to the full decode; stop strings cut text."""

from __future__ import annotations

import pytest

from lmforge.data.tokenizer import build_byte, train_bpe
from lmforge.infer.textstream import TextStream

TEXT = "Grüße aus Köln — naïve café, 東京! Ünïcödé again.\nSecond line."


@pytest.fixture(scope="module")
def byte_tok():
    return build_byte(["<|endoftext|>"])


def _stream_all(tokenizer, ids, stop=()) -> tuple[str, TextStream]:
    stream = TextStream(tokenizer, stop)
    pieces = [stream.push(i) for i in ids]
    pieces.append(stream.flush())
    return "".join(pieces), stream


def test_byte_tokens_split_characters_yet_stream_exactly(byte_tok) -> None:
    ids = byte_tok.encode(TEXT)
    assert len(ids) > len(TEXT)  # multi-byte characters span several tokens
    streamed, stream = _stream_all(byte_tok, ids)
    assert streamed == TEXT == stream.text
    # No piece ever shows a half character.
    stream = TextStream(byte_tok)
    assert all("\ufffd" not in stream.push(i) for i in ids)


def test_bpe_stream_equals_decode() -> None:
    tok = train_bpe([TEXT * 20], 300, ["<|endoftext|>"], 2)
    ids = tok.encode(TEXT)
    assert _stream_all(tok, ids)[0] == tok.decode(ids) == TEXT


def test_stop_string_cuts_and_is_never_shown(byte_tok) -> None:
    ids = byte_tok.encode("abc STOP def")
    stream = TextStream(byte_tok, ["STOP"])
    shown = ""
    for i in ids:
        shown += stream.push(i)
        assert "S" not in shown  # a possible stop prefix is held back
        if stream.stopped:
            break
    shown += stream.flush()
    assert shown == "abc " == stream.text
    assert stream.stopped


def test_held_back_prefix_is_released_when_it_is_not_a_stop(byte_tok) -> None:
    ids = byte_tok.encode("a\n\nb\nc")
    text, stream = _stream_all(byte_tok, ids, stop=["\n\n\n"])
    assert text == "a\n\nb\nc" and not stream.stopped
    text, stream = _stream_all(byte_tok, ids, stop=["\nc", "\n\n"])
    assert text == "a" and stream.stopped  # the earliest stop string wins
