"""SQuAD v1.1 answer scoring: the official normalisation, exact match and token F1, and baselines.

Follows the official `evaluate-v1.1.py` exactly (lower-case, strip punctuation, drop the articles
a/an/the, collapse whitespace; the best score over the reference answers). The baselines need no
model and give the floor a trained model must beat.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\S+")


def normalize_answer(text: str) -> str:
    """Official SQuAD normalisation: lower, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: list[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference, else 0.0."""
    norm = normalize_answer(prediction)
    return float(any(norm == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: list[str]) -> float:
    """The best bag-of-tokens F1 between the prediction and any reference (official definition)."""
    return max(_f1(prediction, a) for a in answers)


def _f1(prediction: str, answer: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(answer).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list[str], answers: list[list[str]]) -> dict[str, float]:
    """Mean exact match and F1 in percent, as the official script reports them."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists")
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = sum(exact_match(p, a) for p, a in zip(predictions, answers, strict=True))
    f1 = sum(token_f1(p, a) for p, a in zip(predictions, answers, strict=True))
    return {"exact_match": 100.0 * em / len(predictions), "f1": 100.0 * f1 / len(predictions)}


# ---------------------------------------------------------------------------------------------
# Baselines: no model, just the context and the question.


def split_sentences(context: str) -> list[str]:
    """Sentences split after . ! or ? followed by whitespace (good enough for Wikipedia prose)."""
    return [s for s in _SENTENCE_END.split(context.strip()) if s]


def first_sentence_baseline(context: str, question: str) -> str:
    """The first sentence of the context, whatever the question."""
    sentences = split_sentences(context)
    return sentences[0] if sentences else ""


def overlap_span_baseline(context: str, question: str, max_words: int = 4) -> str:
    """A crude extractive guess: in the sentence sharing most words with the question, the first
    run of up to `max_words` words that do not appear in the question.

    The span a question "points at" is usually next to the words it repeats, and never those words.
    """
    sentences = split_sentences(context) or [context]
    q_words = set(normalize_answer(question).split())

    def overlap(sentence: str) -> int:
        return len(q_words & set(normalize_answer(sentence).split()))

    best = max(sentences, key=overlap)
    span: list[str] = []
    for word in _WORD.findall(best):
        norm = normalize_answer(word)
        if norm and norm not in q_words:
            span.append(word)
            if len(span) == max_words:
                break
        elif span:
            break
    return " ".join(span).strip(string.punctuation + " ")
