"""Document cleaning: a chain of steps, each counting documents and UTF-8 bytes in and out.

Defaults are lossless: Unicode NFC and removal of invalid control characters (empty documents are
dropped). Opt-in: NFKC, whitespace normalisation, boilerplate line patterns, the Gopher
repeated-line filter (Rae et al. 2021), length filters, exact dedup and near-duplicate removal
with MinHash LSH. Steps see one document at a time.

The two dedup steps keep their state in `DigestSet`s: open-addressing tables of 8-byte digests
that never exceed `clean.dedup_memory_mb` each, so memory does not grow with the corpus. Exact
dedup stores one digest per kept document (about 16 bytes with the table's slack); near dedup
stores one per LSH band (`b` bands, 9 at the default threshold 0.8 and 128 permutations: about
150 bytes per kept document), the same banding `datasketch.MinHashLSH` uses, so the same
documents are dropped. A full table stops prepare with the number of documents it held and the
key to raise. 64-bit digests collide with probability ~n^2/2^65 (1e-5 at 20M documents).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import Field, field_validator

from lmforge.config import Section
from lmforge.errors import DataError

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
    dedup_memory_mb: int = Field(
        256, description="memory cap of each dedup index (exact, near) in MB; bounds kept docs"
    )

    @field_validator("dedup_memory_mb")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1 (MB per dedup index)")
        return value

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
    max_bytes = cfg.dedup_memory_mb * 1_000_000
    if cfg.dedup:
        steps.append(("dedup", ExactDedup(max_bytes)))
    if cfg.near_dedup:
        near = NearDedup(
            cfg.near_dedup_threshold, cfg.near_dedup_num_perm, cfg.near_dedup_ngram, max_bytes
        )
        steps.append(("near_dedup", near))
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


class DigestSet:
    """A set of 8-byte digests in one flat table (linear probing) capped at `max_bytes`.

    It doubles while under the cap (at half full); at the cap it fills to 3/4 and then raises
    DataError naming `what` and the key that raises the cap.
    """

    _FIRST_SLOTS = 1 << 12

    def __init__(self, max_bytes: int, what: str) -> None:
        self.max_slots = max(self._FIRST_SLOTS, 1 << (max(max_bytes, 8) // 8).bit_length() - 1)
        self.what = what
        self.count = 0
        self._table = array("Q", bytes(8 * min(self._FIRST_SLOTS, self.max_slots)))

    @property
    def nbytes(self) -> int:
        return len(self._table) * 8

    def __contains__(self, key: int) -> bool:
        table, mask = self._table, len(self._table) - 1
        slot = key & mask
        while (found := table[slot]) != 0:
            if found == key:
                return True
            slot = (slot + 1) & mask
        return False

    def add(self, key: int) -> bool:
        """Insert `key` (non-zero); False when it was already there."""
        table, mask = self._table, len(self._table) - 1
        slot = key & mask
        while (found := table[slot]) != 0:
            if found == key:
                return False
            slot = (slot + 1) & mask
        self._make_room()
        if len(self._table) - 1 != mask:  # the table grew: find the slot again
            return self.add(key)
        table[slot] = key
        self.count += 1
        return True

    def _make_room(self) -> None:
        size = len(self._table)
        if 2 * (self.count + 1) <= size:
            return
        if size < self.max_slots:
            old, self._table = self._table, array("Q", bytes(16 * size))
            mask = 2 * size - 1
            for key in old:
                if key:
                    slot = key & mask
                    while self._table[slot]:
                        slot = (slot + 1) & mask
                    self._table[slot] = key
            return
        if 4 * (self.count + 1) > 3 * size:
            raise DataError(
                f"the {self.what} index is full ({self.count:,} entries in "
                f"{self.nbytes / 1e6:.0f} MB); raise clean.dedup_memory_mb (16 bytes per entry)"
            )


def digest64(data: bytes) -> int:
    """A non-zero 64-bit digest (0 marks an empty slot in a DigestSet)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") or 1


class ExactDedup:
    """Keep the first of documents whose whitespace-collapsed text is identical."""

    def __init__(self, max_bytes: int = 256_000_000) -> None:
        self.seen = DigestSet(max_bytes, "exact dedup")

    def __call__(self, text: str) -> str | None:
        return text if self.seen.add(digest64(" ".join(text.split()).encode("utf-8"))) else None


class NearDedup:
    """Keep the first of documents whose word n-gram MinHash is within `threshold` Jaccard."""

    def __init__(
        self, threshold: float, num_perm: int, ngram: int, max_bytes: int = 256_000_000
    ) -> None:
        from datasketch import MinHash, MinHashLSH  # only this opt-in step needs datasketch

        # datasketch's choice of bands (b) and rows per band (r) for this threshold; the bands
        # themselves live in a DigestSet instead of its unbounded dicts.
        params = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.bands = [(i * params.r, (i + 1) * params.r) for i in range(params.b)]
        self.index = DigestSet(max_bytes, "near dedup")
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
        values = minhash.hashvalues
        # A document is a near duplicate when one band equals that band of a kept document.
        keys = [
            digest64(bytes([band]) + values[start:end].tobytes())
            for band, (start, end) in enumerate(self.bands)
        ]
        if any(key in self.index for key in keys):
            return None
        for key in keys:
            self.index.add(key)
        self.count += 1
        return text
