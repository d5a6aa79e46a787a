"""Tokenising into shards: the same bytes as the simple per-document path, for every tokenizer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import tokenizers

from lmforge.data import encode
from lmforge.data.shards import SplitWriter, read_shard
from lmforge.data.tokenizer import EOT, Tokenizer, build_byte, build_char, train_bpe
from lmforge.errors import DataError

WORDS = "the of and to in is naïve 東京 😀 e\u0301 <|endoftext|> <pad> \n\n tab\t x".split(" ")


def _docs(count: int = 80, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    docs = []
    for i in range(count):
        text = " ".join(rng.choices(WORDS, k=rng.randint(0, 40)))
        if i % 17 == 3:
            text = "\n".join([text] * 60)  # long enough to be cut into chunks
        docs.append((f"doc{i}", text, "val" if rng.random() < 0.2 else "train"))
    return docs


def _old_path(tokenizer: Tokenizer, docs, shard_tokens: int) -> dict[str, list[bytes]]:
    """The reference: each document encoded alone by `tokenizers`, then an end-of-text id."""
    reference = tokenizers.Tokenizer.from_str(tokenizer.to_str())
    ids: dict[str, list[int]] = {"train": [], "val": []}
    for _, text, split in docs:
        ids[split] += reference.encode(text, add_special_tokens=False).ids + [tokenizer.eot_id]
    out = {}
    for split, tokens in ids.items():
        array = np.asarray(tokens, dtype=np.uint16)
        out[split] = [
            array[i : i + shard_tokens].tobytes() for i in range(0, len(array), shard_tokens)
        ]
    return out


def _new_path(tmp: Path, tokenizer: Tokenizer, docs, workers: int, shard_tokens: int):
    tmp.mkdir()
    writers = {s: SplitWriter(tmp, s, np.dtype("<u2"), shard_tokens) for s in ("train", "val")}
    chunks = encode.chunk_documents(docs, tokenizer.chunkable, chunk_chars=300)
    stats = encode.encode_to_shards(tokenizer, chunks, writers, workers, task_chars=2000)
    shards = {
        s: [np.asarray(read_shard(p)).tobytes() for p in w.close()] for s, w in writers.items()
    }
    return shards, stats


def _tokenizers(docs) -> dict[str, Tokenizer]:
    texts = [text for _, text, _ in docs]
    return {
        "bpe": train_bpe(texts, 400, [EOT, "<pad>"]),
        "char": build_char(texts[:40], [EOT, "<pad>"]),  # unknown chars in the rest -> <unk>
        "byte": build_byte([EOT, "<pad>"]),
    }


@pytest.mark.parametrize("join_chars", [None, 500])
@pytest.mark.parametrize("kind", ["bpe", "char", "byte"])
def test_shards_equal_the_per_document_path(tmp_path, kind, join_chars, monkeypatch):
    if join_chars:  # joined texts cut every ~500 characters (at chunk boundaries) instead of 64K
        monkeypatch.setattr(encode, "CHUNK_CHARS", join_chars)
    docs = _docs()
    tokenizer = _tokenizers(docs)[kind]
    assert tokenizer.joins_documents
    expected = _old_path(tokenizer, docs, 1000)
    shards, stats = _new_path(tmp_path / "new", tokenizer, docs, 1, 1000)
    assert shards == expected
    assert stats.documents == len(docs)
    assert stats.chars == sum(len(text) for _, text, _ in docs)


def test_two_workers_and_a_tokenizer_that_cannot_join(tmp_path):
    docs = _docs(40, seed=1)
    tokenizer = train_bpe([t for _, t, _ in docs], 400, [EOT])
    # An end-of-text token that strips the spaces after it would swallow a document's leading
    # spaces if documents were joined, so such a tokenizer is encoded one chunk at a time.
    data = json.loads(tokenizer.to_str())
    for token in data["added_tokens"]:
        token["rstrip"] = token["content"] == EOT
    stripping = Tokenizer.from_str(json.dumps(data))
    assert not stripping.joins_documents
    docs.append(("spaces", "   leading spaces", "train"))
    truncating = Tokenizer.from_str(tokenizer.to_str())
    truncating.inner.enable_truncation(50)  # per call: joining documents would change the ids
    truncating = Tokenizer.from_str(truncating.inner.to_str())
    assert not truncating.joins_documents
    for i, tok in enumerate((tokenizer, stripping, truncating)):
        expected = _old_path(tok, docs, 1000)
        assert _new_path(tmp_path / f"w2-{i}", tok, docs, 2, 1000)[0] == expected
        assert _new_path(tmp_path / f"w1-{i}", tok, docs, 1, 1000)[0] == expected


def test_unknown_error_names_the_document(tmp_path):
    tokenizer = build_char(["abc"], [EOT])
    docs = [("first", "abc", "train"), ("second", "ab?c", "train")]
    with pytest.raises(DataError, match=r"second: characters outside .*'\?'"):
        tmp_path.joinpath("x").mkdir()
        writers = {"train": SplitWriter(tmp_path / "x", "train", np.dtype("<u2"), 100)}
        encode.encode_to_shards(tokenizer, encode.chunk_documents(docs, True), writers, 1, "error")


def test_joined_texts_end_at_chunk_boundaries_and_keep_every_character():
    chunks = [
        encode.Chunk("a", "x" * 300, "train", False),
        encode.Chunk("a", "y" * 300, "train", True),
        encode.Chunk("b", "z" * 100, "train", True),
        encode.Chunk("c", "w" * 50, "val", True),
        encode.Chunk("d", "v" * 700, "val", True),
    ]
    pieces = encode.plan_texts(chunks, True, EOT, join_chars=500)
    assert [(split, len(text)) for split, text, _ in pieces] == [
        ("train", 600 + len(EOT)),  # cut once past 500 characters, after a whole chunk
        ("train", 100 + len(EOT)),
        ("val", 50 + 700 + 2 * len(EOT)),
    ]
    joined = {split: "" for split in ("train", "val")}
    for split, text, eot in pieces:
        assert not eot  # joined texts carry their end-of-text tokens inside
        joined[split] += text
    assert joined["train"] == "x" * 300 + "y" * 300 + EOT + "z" * 100 + EOT
    assert joined["val"] == "w" * 50 + EOT + "v" * 700 + EOT
