"""Corpus BLEU and chrF for translation tasks, computed by `sacrebleu` (the field's reference).

Only a thin wrapper: sacrebleu's default 13a tokenisation and chrF (char order 6, beta 2), so
numbers are comparable with published Multi30k results. `sacrebleu` is an optional dependency
(extra `eval`) and is imported when a score is asked for.
"""

from __future__ import annotations

from lmforge.errors import ConfigError


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "translation metrics need sacrebleu; install it with pip install 'lmforge[eval]'"
        ) from None
    return sacrebleu


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) of one hypothesis per sentence against one reference each."""
    _check_lengths(hypotheses, references)
    return float(_sacrebleu().corpus_bleu(hypotheses, [references]).score)


def corpus_chrf(hypotheses: list[str], references: list[str]) -> float:
    """Corpus chrF (0-100), character n-gram F-score; kinder than BLEU to small models."""
    _check_lengths(hypotheses, references)
    return float(_sacrebleu().corpus_chrf(hypotheses, [references]).score)


def _check_lengths(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
