"""Cleaning steps: defaults are lossless, opt-in steps do what they say, counts add up."""

from __future__ import annotations

import random

import pytest

from lmforge.config import build_config
from lmforge.data.clean import (
    CleanConfig,
    Cleaner,
    DigestSet,
    NearDedup,
    normalize_whitespace,
    repeated_line_fraction,
)
from lmforge.errors import ConfigError, DataError


def _run(cfg: CleanConfig, docs: list[str]) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    cleaner = Cleaner(cfg)
    kept = [t for t in (cleaner(d) for d in docs) if t is not None]
    table = {s.name: (s.docs_in, s.docs_out, s.bytes_in, s.bytes_out) for s in cleaner.stats}
    return kept, table


def test_defaults_nfc_and_control_chars_only():
    decomposed = "cafe\u0301\x00 tab\there\r\n\x1b[0m\x0c"
    kept, table = _run(CleanConfig(), [decomposed, "", "plain"])
    assert kept == ["caf\u00e9 tab\there\r\n[0m\x0c", "plain"]
    assert list(table) == ["nfc", "control_chars", "length"]
    assert table["nfc"][:2] == (3, 3) and table["nfc"][3] == table["nfc"][2] - 1  # e+U+0301 -> é
    assert table["control_chars"][2] - table["control_chars"][3] == 2  # NUL and ESC removed
    assert table["length"][:2] == (3, 2)  # the empty document is dropped


def test_nfkc_and_whitespace():
    cfg = CleanConfig(nfkc=True, whitespace=True)
    kept, table = _run(cfg, ["\ufb01ne  \uff21\u00a0b \r\n\r\n\r\n\r\nend  \n\n"])
    assert kept == ["fine  A b\n\nend"]
    assert normalize_whitespace("a\rb\n\n\n\nc \t") == "a\nb\n\nc"
    assert set(table) >= {"nfkc", "whitespace"}


def test_boilerplate_patterns_and_repeated_lines():
    cfg = CleanConfig(
        drop_line_patterns=[r"^Copyright", r"cookies"], max_repeated_line_fraction=0.3
    )
    spam = "\n".join(["buy now"] * 5 + ["once"])
    kept, table = _run(cfg, ["Copyright 2024\nreal text\nwe use cookies\nmore", spam])
    assert kept == ["real text\nmore"]
    assert table["boilerplate"][:2] == (2, 2) and table["repeated_lines"][:2] == (2, 1)
    assert repeated_line_fraction("a\na\nb\n\n") == pytest.approx(1 / 3)


def test_length_and_exact_dedup():
    cfg = CleanConfig(min_chars=3, max_chars=10, dedup=True)
    kept, table = _run(cfg, ["ab", "hello world!", "same  text", "same text", "other"])
    assert kept == ["same  text", "other"]  # whitespace-collapsed duplicate dropped
    assert table["length"][:2] == (5, 3) and table["dedup"][:2] == (3, 2)


def test_near_dedup_minhash():
    base = " ".join(f"word{i}" for i in range(200))
    near = base.replace("word100", "changed")
    other = " ".join(f"token{i}" for i in range(200))
    kept, table = _run(CleanConfig(near_dedup=True), [base, near, other])
    assert kept == [base, other]
    assert table["near_dedup"][:2] == (3, 2)


def test_bad_clean_config_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="drop_line_patterns.*not a valid regex"):
        build_config(CleanConfig, overrides={"drop_line_patterns": ["("]})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        build_config(CleanConfig, overrides={"near_dedup_threshold": 2.0})


def test_digest_set_behaves_like_a_set_and_stops_at_its_cap():
    rng = random.Random(0)
    keys = [rng.getrandbits(64) or 1 for _ in range(20000)]
    keys += keys[:3000]  # repeats
    digests, reference = DigestSet(1 << 20, "test"), set()
    for key in keys:
        assert digests.add(key) == (key not in reference)
        reference.add(key)
    assert digests.count == len(reference) and digests.nbytes <= 1 << 20
    assert all(k in digests for k in reference) and 12345 not in digests
    small = DigestSet(64 * 1024, "exact dedup")  # 8192 slots: 6144 entries at most
    with pytest.raises(
        DataError, match=r"exact dedup index is full \(6,144 entries.*dedup_memory_mb"
    ):
        for key in keys:
            small.add(key)


def _lsh_reference(texts: list[str], threshold: float, num_perm: int, ngram: int) -> list[str]:
    """The previous implementation: datasketch's own MinHashLSH index."""
    from datasketch import MinHash, MinHashLSH

    lsh, kept = MinHashLSH(threshold=threshold, num_perm=num_perm), []
    template = MinHash(num_perm=num_perm, seed=1)
    for i, text in enumerate(texts):
        words = text.lower().split()
        shingles = {" ".join(words[j : j + ngram]) for j in range(max(1, len(words) - ngram + 1))}
        minhash = template.copy()
        minhash.update_batch([s.encode("utf-8") for s in shingles])
        if not lsh.query(minhash):
            lsh.insert(str(i), minhash)
            kept.append(text)
    return kept


def test_bounded_near_dedup_drops_what_datasketch_lsh_drops():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(300)]
    bases = [[rng.choice(vocab) for _ in range(60)] for _ in range(60)]
    texts = []
    for _ in range(300):  # variants of the bases with 0-12 words changed: some near, some not
        words = list(rng.choice(bases))
        for _ in range(rng.randint(0, 12)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        texts.append(" ".join(words))
    for threshold in (0.5, 0.8):
        step = NearDedup(threshold, 64, 3)
        kept = [t for t in texts if step(t) is not None]
        assert kept == _lsh_reference(texts, threshold, 64, 3)
        assert 60 <= len(kept) < len(texts)
