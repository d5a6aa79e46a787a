"""Document cleaning: a chain of steps, each counting documents and UTF-8 bytes in and out.

Defaults are lossless: Unicode NFC and removal of invalid control characters (empty documents are
dropped). Opt-in: NFKC, whitespace normalisation, boilerplate line patterns, the Gopher
repeated-line filter (Rae et al. 2021), length filters, exact dedup (a 16-byte hash per kept
document) and near-duplicate removal with MinHash LSH (`datasketch`; about num_perm x 8 bytes
plus index overhead per kept document, ~2 KB at num_perm=128). Steps see one document at a time.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import Field, field_validator

from lmforge.config import Section

# C0 controls except tab/LF/VT/FF/CR, DEL, C1 controls except NEL, and the non-characters
# U+FFFE/U+FFFF: none of them is text, and several break terminals and JSON tools.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ufffe\uffff]")
_SPACES = re.compile(r"[^\S\n\t]")  # horizontal whitespace other than tab: NBSP, U+2009, ...
_TRAILING = re.compile(r"[ \t]+$", re.M)
_BLANK_RUNS = re.compile(r"\n{3,}")


class CleanConfig(Section):
    """The `clean.*` keys of `lmforge prepare`."""

    nfc: bool = Field(True, description="Unicode NFC normalisation (lossless)")
    control_chars: bool = Field(True, description="remove invalid control characters")
    nfkc: bool = Field(False, description="Unicode NFKC (folds ligatures, full-width forms)")
    whitespace: bool = Field(
        False, description="CRLF->LF, odd spaces->' ', strip line ends, <=1 blank line"
    )
    drop_line_patterns: list[str] = Field(
        [], description="regexes; lines matching any are removed (boilerplate)"
    )
    max_repeated_line_fraction: float | None = Field(
        None, description="drop docs whose duplicate-line fraction is above this (Gopher: 0.3)"
    )
    min_chars: int = Field(1, description="drop documents shorter than this many characters")
    max_chars: int | None = Field(None, description="drop documents longer than this")
    dedup: bool = Field(False, description="drop exact duplicates (whitespace-collapsed text)")
    near_dedup: bool = Field(False, description="drop near-duplicates (MinHash LSH)")
    near_dedup_threshold: float = Field(0.8, description="Jaccard similarity counted as dup")
    near_dedup_num_perm: int = Field(128, description="MinHash permutations")
    near_dedup_ngram: int = Field(5, description="word n-gram size of the MinHash shingles")

    @field_validator("drop_line_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regex ({exc})") from None
        return patterns

    @field_validator("max_repeated_line_fraction", "near_dedup_threshold")
    @classmethod
    def _fraction(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError("must be between 0 and 1")
        return value


@dataclass
class StepStats:
    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Step = Callable[[str], "str | None"]  # cleaned text, or None to drop the document


class Cleaner:
    """Apply the enabled steps to one document at a time and count what each did."""

    def __init__(self, cfg: CleanConfig) -> None:
        self.steps: list[tuple[str, Step]] = _build_steps(cfg)
        self.stats = [StepStats(name) for name, _ in self.steps]

    def __call__(self, text: str) -> str | None:
        size = len(text.encode("utf-8"))
        for (_, step), stats in zip(self.steps, self.stats, strict=True):
            stats.docs_in += 1
            stats.bytes_in += size
            cleaned = step(text)
            if cleaned is None:
                return None
            if cleaned is not text and cleaned != text:
                text, size = cleaned, len(cleaned.encode("utf-8"))
            stats.docs_out += 1
            stats.bytes_out += size
        return text

    def biggest_filter(self) -> StepStats | None:
        """The step that dropped the most documents (for 'everything was filtered' errors)."""
        dropping = [s for s in self.stats if s.docs_in > s.docs_out]
        return max(dropping, key=lambda s: s.docs_in - s.docs_out, default=None)


def _build_steps(cfg: CleanConfig) -> list[tuple[str, Step]]:
    steps: list[tuple[str, Step]] = []
    if cfg.nfc:
        steps.append(("nfc", lambda t: _normalize("NFC", t)))
    if cfg.control_chars:
        steps.append(("control_chars", lambda t: _CONTROL.sub("", t)))
    if cfg.nfkc:
        steps.append(("nfkc", lambda t: _normalize("NFKC", t)))
    if cfg.whitespace:
        steps.append(("whitespace", normalize_whitespace))
    if cfg.drop_line_patterns:
        steps.append(("boilerplate", _line_dropper(cfg.drop_line_patterns)))
    if cfg.max_repeated_line_fraction is not None:
        limit = cfg.max_repeated_line_fraction
        steps.append(("repeated_lines", lambda t: None if repeated_line_fraction(t) > limit else t))
    if cfg.min_chars > 0 or cfg.max_chars is not None:
        steps.append(("length", _length_filter(cfg.min_chars, cfg.max_chars)))
    if cfg.dedup:
        steps.append(("dedup", ExactDedup()))
    if cfg.near_dedup:
        steps.append(
            (
                "near_dedup",
                NearDedup(cfg.near_dedup_threshold, cfg.near_dedup_num_perm, cfg.near_dedup_ngram),
            )
        )
    return steps


def _normalize(form: str, text: str) -> str:
    # The quick check is far cheaper than normalising, and most text is already normalised.
    return text if unicodedata.is_normalized(form, text) else unicodedata.normalize(form, text)


def normalize_whitespace(text: str) -> str:
    """CRLF/CR -> LF, other horizontal spaces -> ' ', no trailing spaces, at most 1 blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _TRAILING.sub("", text)
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")


def _line_dropper(patterns: list[str]) -> Step:
    pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def drop_lines(text: str) -> str:
        if not pattern.search(text):
            return text
        return "\n".join(line for line in text.split("\n") if not pattern.search(line))

    return drop_lines


def repeated_line_fraction(text: str) -> float:
    """Fraction of non-blank lines that repeat an earlier line of the same document."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines:
        return 0.0
    return 1.0 - len(set(lines)) / len(lines)


def _length_filter(min_chars: int, max_chars: int | None) -> Step:
    def by_length(text: str) -> str | None:
        if len(text) < min_chars or (max_chars is not None and len(text) > max_chars):
            return None
        return text

    return by_length


class ExactDedup:
    """Keep the first of documents whose whitespace-collapsed text is identical."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()

    def __call__(self, text: str) -> str | None:
        key = hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=16).digest()
        if key in self.seen:
            return None
        self.seen.add(key)
        return text


class NearDedup:
    """Keep the first of documents whose word n-gram MinHash is within `threshold` Jaccard."""

    def __init__(self, threshold: float, num_perm: int, ngram: int) -> None:
        from datasketch import MinHash, MinHashLSH  # only this opt-in step needs datasketch

        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        # Drawing the permutations is the expensive part of a MinHash; draw them once.
        self._template = MinHash(num_perm=num_perm, seed=1)
        self.ngram = ngram
        self.count = 0

    def __call__(self, text: str) -> str | None:
        words = text.lower().split()
        n = self.ngram
        shingles = {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}
        minhash = self._template.copy()
        minhash.update_batch([s.encode("utf-8") for s in shingles])
        if self.lsh.query(minhash):
            return None
        self.lsh.insert(str(self.count), minhash)
        self.count += 1
        return text
