"""Tokenizers: char, byte, BPE, GPT-2 and any `tokenizer.json`, all run by HF `tokenizers`.

Every kind is expressed as a real `tokenizer.json`, so `tokenizers.Tokenizer.from_file` reproduces
lmforge's ids exactly and export is a file copy. Ids: the base vocabulary first, special tokens
after it (GPT-2's layout: `<|endoftext|>` is the last id). lmforge never adds hidden BOS/EOS and
decodes special tokens as their text. BPE training is HF's `BpeTrainer`; we never hand-write one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tokenizers
from pydantic import Field, field_validator
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers

from lmforge.config import Section
from lmforge.data.vectorised import VectorEncoder, bytes_to_unicode, count_code_points
from lmforge.errors import ConfigError, DataError

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"
UNK = "<unk>"
PAD_NAMES = ("<pad>", "<|pad|>", "[PAD]")
TokenizerKind = Literal["char", "byte", "bpe", "gpt2", "file"]
DEFAULT_BPE_VOCAB = 4096
# BPE's memory grows with the distinct pre-tokens it sees; 100 MB of text is plenty for vocabularies
# of tens of thousands and keeps training to a few minutes and well under a GiB.
DEFAULT_TRAIN_BYTES = 100_000_000


class TokenizerConfig(Section):
    """The `tokenizer.*` keys of `lmforge prepare`."""

    kind: TokenizerKind = Field(
        "bpe", description="char | byte | bpe (trained here) | gpt2 (local files) | file (json)"
    )
    vocab_size: int | None = Field(
        None,
        description="bpe: total vocab incl. specials (default 4096); char: cap on chars+specials",
    )
    path: str | None = Field(
        None,
        description="gpt2: dir with vocab.json+merges.txt or encoder.json+vocab.bpe; file: json",
    )
    special_tokens: list[str] = Field(
        [EOT], description="special tokens appended after the base vocab (<|endoftext|> always)"
    )
    unknown: Literal["unk", "error"] = Field(
        "unk", description="char: a character outside the vocab becomes <unk> (counted) or an error"
    )
    min_frequency: int = Field(2, description="bpe: a pair must occur this often to be merged")
    train_bytes: int = Field(
        DEFAULT_TRAIN_BYTES,
        description="bpe: train on a seeded sample of at most this many bytes of the corpus",
    )

    @field_validator("train_bytes")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1 (bytes of the corpus BPE is trained on)")
        return value

    @field_validator("special_tokens")
    @classmethod
    def _eot_first(cls, tokens: list[str]) -> list[str]:
        # The end-of-text token separates documents in every data dir, so it can never be absent.
        rest = [t for t in dict.fromkeys(tokens) if t != EOT]
        if any(not t for t in rest):
            raise ValueError("special tokens must be non-empty strings")
        return [EOT, *rest]


class Tokenizer:
    """A `tokenizers.Tokenizer` plus lmforge's conventions (see the module docstring)."""

    def __init__(self, inner: tokenizers.Tokenizer, kind: str | None = None) -> None:
        self.inner = inner
        self._json: dict[str, Any] = json.loads(inner.to_str())
        self.kind = kind or _infer_kind(self._json)
        eot = inner.token_to_id(EOT)
        if eot is None:
            raise DataError(
                f"tokenizer has no '{EOT}' token; prepare a data dir with tokenizer.kind=file, "
                "which adds it"
            )
        self.eot_id: int = eot
        self._fast = hasattr(inner, "encode_batch_fast")

    # -- loading and saving ----------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, kind: str | None = None) -> Tokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise DataError(f"tokenizer file {path} does not exist; check tokenizer.path")
        try:
            inner = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for malformed files
            raise DataError(f"{path} is not a valid tokenizer.json ({exc})") from None
        return cls(inner, kind)

    @classmethod
    def from_str(cls, text: str, kind: str | None = None) -> Tokenizer:
        return cls(tokenizers.Tokenizer.from_str(text), kind)

    def to_str(self) -> str:
        return self.inner.to_str()

    def save(self, path: str | Path) -> None:
        """Write `tokenizer.json` atomically (temp name, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.inner.to_str(pretty=True), encoding="utf-8")
        tmp.replace(path)

    # -- encoding --------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; no BOS/EOS is added."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # encode_batch_fast (tokenizers >= 0.21) skips offsets: same ids, about 2x faster.
        if self._fast:
            encodings = self.inner.encode_batch_fast(texts, add_special_tokens=False)
        else:  # pragma: no cover - older tokenizers
            encodings = self.inner.encode_batch(texts, add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special tokens appear as their text (`<|endoftext|>`)."""
        return self.inner.decode([int(i) for i in ids], skip_special_tokens=False)

    # -- vocabulary ------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.inner.get_vocab_size(with_added_tokens=True)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token text -> id (`<unk>` included for char tokenizers)."""
        found = {
            tok.content: idx
            for idx, tok in self.inner.get_added_tokens_decoder().items()
            if tok.special
        }
        if self.unk_id is not None:
            found[UNK] = self.unk_id
        return dict(sorted(found.items(), key=lambda kv: kv[1]))

    @property
    def pad_id(self) -> int | None:
        for name in PAD_NAMES:
            idx = self.inner.token_to_id(name)
            if idx is not None:
                return idx
        return None

    @property
    def unk_id(self) -> int | None:
        unk = self._json.get("model", {}).get("unk_token")
        return self.inner.token_to_id(unk) if unk else None

    def token_to_id(self, token: str) -> int | None:
        return self.inner.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self.inner.id_to_token(idx)

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes each id decodes to (0 for special tokens); for bits-per-byte."""
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        specials = set(self.special_tokens.values())
        byte_level = _component_type(self._json.get("decoder")) == "ByteLevel"
        for token, idx in self.inner.get_vocab(with_added_tokens=True).items():
            if idx in specials:
                continue
            # A byte-level token is one char per byte; decoding it alone could split a UTF-8
            # sequence and count U+FFFD instead.
            lengths[idx] = len(token) if byte_level else len(self.decode([idx]).encode("utf-8"))
        return lengths

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON (sorted keys), stable across pretty-printing."""
        canonical = json.dumps(self._json, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @cached_property
    def vector_encoder(self) -> VectorEncoder | None:
        """numpy encoder with the same ids, for char/byte-like tokenizers; None otherwise."""
        return VectorEncoder.for_tokenizer(self._json)

    def encode_array(self, text: str) -> np.ndarray:
        """Ids of `text` as a numpy array (uint32); the vectorised path when there is one."""
        vector = self.vector_encoder
        if vector is not None:
            return vector.encode(text)
        return np.asarray(self.encode(text), dtype=np.uint32)

    @cached_property
    def joins_documents(self) -> bool:
        """True when encoding `a + EOT + b` gives exactly the ids of `a`, the EOT id, then `b`.

        `tokenizers` splits added tokens out of the raw text before normalising or
        pre-tokenising the pieces between them, so this holds unless the end-of-text token
        strips its neighbours or is matched after normalisation, or another added token could
        match across a document border (one that overlaps the end-of-text text). Truncation or
        padding in the tokenizer.json applies per call, so it rules joining out too.
        """
        if self._json.get("truncation") or self._json.get("padding"):
            return False
        for token in self._json.get("added_tokens") or []:
            content = token.get("content", "")
            if content == EOT:
                if token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
                    return False
                if token.get("normalized") and self._json.get("normalizer") is not None:
                    return False
                continue
            for k in range(len(content)):
                tail = content[k:]
                if tail.startswith(EOT) or (k > 0 and EOT.startswith(tail)):
                    return False
        return True

    @property
    def chunkable(self) -> bool:
        """True when cutting text at `split_for_encoding` boundaries leaves the ids unchanged."""
        # Truncation and padding apply per call, so a cut would change them.
        if self._json.get("truncation") or self._json.get("padding"):
            return False
        # An added token that strips its neighbours could eat the space a cut falls before.
        for token in self._json.get("added_tokens") or []:
            if token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
                return False
        if self.kind in ("char", "byte", "bpe", "gpt2"):
            return True
        pre = self._json.get("pre_tokenizer") or {}
        return (
            self._json.get("normalizer") is None
            and pre.get("type") == "ByteLevel"
            and not pre.get("add_prefix_space", True)
            and pre.get("use_regex", False)
        )

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, eot_id={self.eot_id})"


def _component_type(component: Any) -> str | None:
    return component.get("type") if isinstance(component, dict) else None


def _infer_kind(data: dict[str, Any]) -> str:
    model = data.get("model", {})
    pre = _component_type(data.get("pre_tokenizer"))
    if model.get("type") != "BPE" or data.get("normalizer") is not None:
        return "file"
    if not model.get("merges"):
        if pre is None and _component_type(data.get("decoder")) == "Fuse":
            return "char"
        if pre == "ByteLevel":
            return "byte"
    return "bpe" if pre == "ByteLevel" else "file"


# -------------------------------------------------------------------------------------------------
# Building each kind.


def build_tokenizer(cfg: TokenizerConfig, texts: Iterable[str] = ()) -> Tokenizer:
    """Make the tokenizer `cfg` asks for; `texts` (the cleaned corpus) feeds char and bpe."""
    if cfg.kind == "char":
        return build_char(texts, cfg.special_tokens, cfg.vocab_size)
    if cfg.kind == "byte":
        return build_byte(cfg.special_tokens, cfg.vocab_size)
    if cfg.kind == "bpe":
        vocab_size = cfg.vocab_size or DEFAULT_BPE_VOCAB
        return train_bpe(texts, vocab_size, cfg.special_tokens, cfg.min_frequency)
    if cfg.kind == "gpt2":
        return load_gpt2(_require_path(cfg), cfg.special_tokens)
    return load_file(_require_path(cfg), cfg.special_tokens)


def _require_path(cfg: TokenizerConfig) -> Path:
    if not cfg.path:
        what = "a dir with GPT-2's vocab files" if cfg.kind == "gpt2" else "a tokenizer.json"
        raise ConfigError(f"tokenizer.kind={cfg.kind} needs tokenizer.path=... ({what})")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise ConfigError(f"tokenizer.path={cfg.path} does not exist; check the path")
    return path


def _add_specials(inner: tokenizers.Tokenizer, specials: list[str]) -> None:
    inner.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])


def _check_vocab(kind: str, vocab_size: int | None, needed: int, what: str) -> None:
    if vocab_size is not None and vocab_size < needed:
        raise ConfigError(
            f"tokenizer.vocab_size={vocab_size} is too small for kind={kind}: it needs {what} = "
            f"{needed}; set tokenizer.vocab_size>={needed} or drop special tokens"
        )


def build_char(
    texts: Iterable[str], specials: list[str], vocab_size: int | None = None
) -> Tokenizer:
    """Characters seen (sorted by code point; the most frequent if capped) + specials + `<unk>`.

    Expressed as a merge-free BPE model with no pre-tokenizer: one token per character, and
    `tokenizers` runs it about 3x faster than a per-character WordLevel split.
    """
    # Counted with numpy over code points (a Counter over characters runs at ~20 MB/s).
    table = count_code_points(texts)
    present = np.flatnonzero(table)
    counts = dict(zip(map(chr, present.tolist()), table[present].tolist(), strict=True))
    names = [*specials, UNK] if UNK not in specials else list(specials)
    _check_vocab("char", vocab_size, len(names) + 1, f"{len(names)} special tokens + 1 character")
    keep = len(counts) if vocab_size is None else vocab_size - len(names)
    chars = sorted(c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:keep])
    if keep < len(counts):
        log.info("char vocab capped: %d of %d characters kept", keep, len(counts))
    vocab = {c: i for i, c in enumerate(chars)}
    for name in names:
        vocab[name] = len(vocab)
    inner = tokenizers.Tokenizer(models.BPE(vocab, [], unk_token=UNK))
    inner.decoder = decoders.Fuse()
    _add_specials(inner, [t for t in names if t != UNK])
    return Tokenizer(inner, "char")


def _byte_level_tokenizer(model: models.Model, use_regex: bool = True) -> tokenizers.Tokenizer:
    inner = tokenizers.Tokenizer(model)
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)
    inner.decoder = decoders.ByteLevel()
    return inner


def build_byte(specials: list[str], vocab_size: int | None = None) -> Tokenizer:
    """256 byte tokens (id == byte value) + specials; decoding is exact for any UTF-8."""
    _check_vocab("byte", vocab_size, 256 + len(specials), f"256 bytes + {len(specials)} specials")
    alphabet = bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    # No merges, so the GPT-2 split regex changes nothing; skipping it is 2x faster.
    inner = _byte_level_tokenizer(models.BPE(vocab, []), use_regex=False)
    _add_specials(inner, specials)
    return Tokenizer(inner, "byte")


def train_bpe(
    texts: Iterable[str], vocab_size: int, specials: list[str], min_frequency: int = 2
) -> Tokenizer:
    """Byte-level BPE trained by HF `BpeTrainer`; `vocab_size` counts the specials too."""
    _check_vocab("bpe", vocab_size, 256 + len(specials), f"256 bytes + {len(specials)} specials")
    inner = _byte_level_tokenizer(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(specials),
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    inner.train_from_iterator(texts, trainer)
    # Specials after training put them at the end of the id space, as GPT-2 does.
    _add_specials(inner, specials)
    if inner.get_vocab_size() < vocab_size:
        log.info(
            "bpe: the corpus supports only %d of %d tokens", inner.get_vocab_size(), vocab_size
        )
    return Tokenizer(inner, "bpe")


def load_gpt2(path: Path, specials: list[str]) -> Tokenizer:
    """GPT-2's BPE from `vocab.json`+`merges.txt` (HF names) or `encoder.json`+`vocab.bpe`."""
    for vocab_name, merges_name in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
        vocab, merges = path / vocab_name, path / merges_name
        if vocab.is_file() and merges.is_file():
            break
    else:
        raise ConfigError(
            f"tokenizer.path={path} has neither vocab.json+merges.txt nor encoder.json+vocab.bpe; "
            "point it at a GPT-2 tokenizer dir"
        )
    try:
        model = models.BPE.from_file(str(vocab), str(merges))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise DataError(f"cannot read GPT-2 files in {path} ({exc})") from None
    inner = _byte_level_tokenizer(model)
    _add_specials(inner, specials)  # <|endoftext|> already has id 50256 and keeps it
    return Tokenizer(inner, "gpt2")


def load_file(path: Path, specials: list[str]) -> Tokenizer:
    """Any `tokenizer.json` (or a dir holding one); missing specials are appended."""
    if path.is_dir():
        path = path / "tokenizer.json"
    try:
        inner = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise ConfigError(f"tokenizer.path={path} is not a valid tokenizer.json ({exc})") from None
    missing = [t for t in specials if inner.token_to_id(t) is None]
    if missing:
        log.info("tokenizer: adding special tokens %s to %s", ", ".join(missing), path)
    _add_specials(inner, specials)
    return Tokenizer(inner)


# -------------------------------------------------------------------------------------------------
# Cutting long documents so several processes can encode one of them.


def _solid(ch: str) -> bool:
    # Printable ASCII or a letter/digit: never whitespace to Python or to the Oniguruma regex.
    return "!" <= ch <= "~" or ch.isalnum()


def _find_cut(text: str, lo: int, hi: int) -> int | None:
    """A cut in [lo, hi) that byte-level BPE pre-tokenisation never crosses, or None.

    After a newline with a non-space on both sides ("foo\\n|bar") or before a single space
    between non-spaces ("foo| bar"): the GPT-2 split regex always ends a piece there, and the
    `\\s+(?!\\S)` look-ahead sees the same character in the chunk as in the whole text.
    """
    end = len(text)
    i = text.find("\n", lo, hi)
    while i != -1:
        if 0 < i < end - 1 and _solid(text[i - 1]) and _solid(text[i + 1]):
            return i + 1
        i = text.find("\n", i + 1, hi)
    i = text.find(" ", lo, hi)
    while i != -1:
        if 0 < i < end - 1 and _solid(text[i - 1]) and _solid(text[i + 1]):
            return i
        i = text.find(" ", i + 1, hi)
    return None


def split_for_encoding(text: str, target_chars: int) -> list[str]:
    """Cut `text` into pieces of about `target_chars` whose encodings concatenate exactly."""
    if len(text) <= target_chars:
        return [text]
    pieces: list[str] = []
    start, lo = 0, target_chars
    while len(text) - start > target_chars and lo < len(text):
        cut = _find_cut(text, lo, min(len(text), lo + target_chars))
        if cut is None:
            lo += target_chars  # no safe cut in this window; look further on
            continue
        pieces.append(text[start:cut])
        start, lo = cut, cut + target_chars
    pieces.append(text[start:])
    return pieces
