"""Generation-task metrics against hand-computed values (SQuAD normalisation, EM/F1, BLEU/chrF via
sacrebleu, baselines), and the task readers on toy files (Multi30k, SQuAD split, prompt/response
JSONL)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmforge.errors import ConfigError, DataError
from lmforge.eval.bleu import corpus_bleu, corpus_chrf
from lmforge.eval.config import TaskSection
from lmforge.eval.generation import Example, exact_match_rate
from lmforge.eval.squad_metrics import (
    exact_match,
    first_sentence_baseline,
    normalize_answer,
    overlap_span_baseline,
    squad_scores,
    token_f1,
)
from lmforge.eval.tasks.multi30k import DE_EN, EN_DE
from lmforge.eval.tasks.sft_jsonl import TASK as SFT_JSONL
from lmforge.eval.tasks.squad import SPLIT_ARTICLES
from lmforge.eval.tasks.squad import TASK as SQUAD


def test_squad_normalisation() -> None:
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear & THE plum.") == "apple pear plum"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("  ") == ""


def test_squad_exact_match_and_f1_hand_values() -> None:
    assert exact_match("the Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0
    # pred {denver, broncos, team}, gold {denver, broncos}: P = 2/3, R = 1, F1 = 0.8
    assert token_f1("Denver Broncos team", ["Denver Broncos"]) == pytest.approx(0.8)
    # best over references: vs "Broncos": P = 1/3, R = 1 -> 0.5; vs "Denver Broncos" 0.8
    assert token_f1("Denver Broncos team", ["Broncos", "Denver Broncos"]) == pytest.approx(0.8)
    assert token_f1("nothing", ["Denver"]) == 0.0
    # repeated tokens count by multiplicity: pred [a, a], gold [a] -> P 1/2, R 1 -> 2/3
    assert token_f1("cat cat", ["cat"]) == pytest.approx(2 / 3)
    scores = squad_scores(
        ["Denver Broncos", "Denver Broncos team"], [["denver broncos"], ["Denver Broncos"]]
    )
    assert scores == {"exact_match": pytest.approx(50.0), "f1": pytest.approx(90.0)}


def test_baselines() -> None:
    context = "Paris is the capital of France. It has the Eiffel Tower, built in 1889 by Eiffel."
    question = "When was the Eiffel Tower built?"
    assert first_sentence_baseline(context, question) == "Paris is the capital of France."
    assert overlap_span_baseline(context, question) == "It has"  # first words not in the question
    assert overlap_span_baseline("Built in 1889.", "When was it built?") == "in 1889"


def test_bleu_on_known_strings() -> None:
    hyp, ref = ["the cat sat on the mat"], ["the cat sat on a mat"]
    # n-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths (no brevity penalty):
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert corpus_bleu(hyp, ref) == pytest.approx(expected, abs=0.01)
    assert corpus_bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)
    assert corpus_chrf(["Ein Mann."], ["Ein Mann."]) == pytest.approx(100.0)
    assert corpus_chrf(["xyz"], ["abc"]) == pytest.approx(0.0)
    # chrF by hand: "abc" vs "abd" has character 1-, 2- and 3-grams only; precision = recall =
    # 2/3, 1/2, 0 for n = 1, 2, 3, averaged over those 3 orders: 7/18, so F(beta=2) = 7/18 too.
    assert corpus_chrf(["abc"], ["abd"]) == pytest.approx(100 * 7 / 18)
    # Spaces are not characters to chrF, and counts pool over the corpus before averaging.
    assert corpus_chrf(["a b c", "xy"], ["abd", "xz"]) == pytest.approx(
        100 * _chrf_by_definition(["abc", "xy"], ["abd", "xz"])
    )
    with pytest.raises(ValueError):
        corpus_bleu(["a"], ["a", "b"])


def _chrf_by_definition(hyps: list[str], refs: list[str], order: int = 6, beta: float = 2) -> float:
    """chrF (Popovic 2015) as sacrebleu defines it: per n-gram order, matched / hypothesis and
    matched / reference counts pooled over the corpus; mean over the orders that occur; F-beta."""
    from collections import Counter

    stats = [[0, 0, 0] for _ in range(order)]
    for hyp, ref in zip(hyps, refs, strict=True):
        h, r = hyp.replace(" ", ""), ref.replace(" ", "")
        for n in range(1, order + 1):
            hc = Counter(h[i : i + n] for i in range(len(h) - n + 1))
            rc = Counter(r[i : i + n] for i in range(len(r) - n + 1))
            stats[n - 1][0] += sum((hc & rc).values())
            stats[n - 1][1] += sum(hc.values())
            stats[n - 1][2] += sum(rc.values())
    orders = [(m / hn, m / rn) for m, hn, rn in stats if hn and rn]
    p = sum(x for x, _ in orders) / len(orders)
    r = sum(y for _, y in orders) / len(orders)
    return 0.0 if p + r == 0 else (1 + beta**2) * p * r / (beta**2 * p + r)


def test_exact_match_rate() -> None:
    examples = [Example("p", " x", ("x",)), Example("q", " y", ("y", "z"))]
    assert exact_match_rate([" x ", "z"], examples) == 100.0
    assert exact_match_rate(["x", "w"], examples) == 50.0


def _write_gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def test_multi30k_reader(tmp_path: Path) -> None:
    _write_gz(tmp_path / "test_2016_flickr.en.gz", ["A dog runs.", "Two men sit."])
    _write_gz(tmp_path / "test_2016_flickr.de.gz", ["Ein Hund rennt.", "Zwei Männer sitzen."])
    cfg = TaskSection(name="multi30k_en_de", dir=str(tmp_path))
    (first, second) = EN_DE.examples("test", cfg)
    assert first.prompt == "English: A dog runs.\nGerman:"
    assert first.response == " Ein Hund rennt." and first.references == ("Ein Hund rennt.",)
    assert DE_EN.examples("test", cfg)[1].prompt == "German: Zwei Männer sitzen.\nEnglish:"
    assert EN_DE.score(["Ein Hund rennt.", "Zwei Männer sitzen."], [first, second])[
        "bleu"
    ] == pytest.approx(100.0)
    _write_gz(tmp_path / "val.en.gz", ["one", "two"])
    _write_gz(tmp_path / "val.de.gz", ["eins"])
    with pytest.raises(DataError, match="line-aligned"):
        EN_DE.examples("dev", cfg)
    with pytest.raises(DataError, match="train.en"):
        EN_DE.examples("train", cfg)


def _squad_file(path: Path, n_articles: int) -> Path:
    data = []
    for a in range(n_articles):
        qas = [
            {
                "id": f"{a}-q",
                "question": f"What is {a}? ",
                "answers": [{"text": f"ans {a}", "answer_start": 0}] * 2,
            }
        ]
        data.append(
            {"title": f"T{a}", "paragraphs": [{"context": f"Context {a}. More.", "qas": qas}]}
        )
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump({"version": "1.1", "data": data}, f)
    return path


def test_squad_split_by_article_is_seeded_and_disjoint(tmp_path: Path) -> None:
    _squad_file(tmp_path / "dev-v1.1.json.gz", 48)
    cfg = TaskSection(name="squad", dir=str(tmp_path))
    splits = {s: SQUAD.examples(s, cfg) for s in ("train", "dev", "test")}
    assert [len(v) for v in splits.values()] == [SPLIT_ARTICLES["train"], SPLIT_ARTICLES["dev"], 8]
    ids = [{e.id for e in v} for v in splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert splits == {s: SQUAD.examples(s, cfg) for s in ("train", "dev", "test")}  # seeded
    example = splits["test"][0]
    assert example.prompt.startswith("Context: Context ") and example.prompt.endswith("?\nAnswer:")
    assert example.response.startswith(" ans ") and len(example.references) == 1  # deduplicated
    # An explicit file is used whole.
    own = _squad_file(tmp_path / "mine.json.gz", 3)
    assert len(SQUAD.examples("test", TaskSection(name="squad", test=str(own)))) == 3


def test_sft_jsonl_reader(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    rows = [{"prompt": f"Q{i}:", "response": f" A{i}"} for i in range(40)]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = TaskSection(name="sft_jsonl", train=str(train), template="### {prompt}")
    tr, dev = SFT_JSONL.examples("train", cfg), SFT_JSONL.examples("dev", cfg)
    assert len(tr) == 38 and len(dev) == 2
    assert {e.prompt for e in tr}.isdisjoint({e.prompt for e in dev})
    assert tr[0].prompt.startswith("### Q") and tr[0].response.startswith(" A")
    with pytest.raises(ConfigError, match="task.test"):
        SFT_JSONL.examples("test", cfg)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="bad.jsonl:2"):
        SFT_JSONL.examples("test", TaskSection(name="sft_jsonl", test=str(bad)))
