"""Cleaning steps: defaults are lossless, opt-in steps do what they say, counts add up."""

from __future__ import annotations

import pytest

from lmforge.config import build_config
from lmforge.data.clean import CleanConfig, Cleaner, normalize_whitespace, repeated_line_fraction
from lmforge.errors import ConfigError


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
