"""The bag-of-words baseline: chosen on dev, scored on test, and in classification reports."""

from __future__ import annotations

import importlib.util
import random

import pytest
from lmforge_testing import require, shared_data_dir

from lmforge.eval.baselines import bag_of_words_baseline


@pytest.fixture(autouse=True)
def _sklearn():
    require(importlib.util.find_spec("sklearn") is not None, "scikit-learn not installed")


def _toy(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(3)
        word = ["sunny warm", "rain cold", "snow ice"][label].split()[rng.randrange(2)]
        filler = " ".join(rng.choice(["the", "a", "day", "was", "very"]) for _ in range(5))
        texts.append(f"{filler} {word} {filler}")
        labels.append(label)
    return texts, labels


def test_a_bag_of_words_separates_word_labelled_classes():
    result = bag_of_words_baseline(_toy(120, 0), _toy(30, 1), _toy(30, 2))
    assert result["bow_acc"] == 1.0 and result["bow_macro_f1"] == 1.0
    assert str(result["bow_setting"]).startswith("C=") and result["bow_dev_acc"] == 1.0
    assert bag_of_words_baseline((["a", "b"], [0, 0]), _toy(3, 1), _toy(3, 2)) == {}


def test_sst2_baseline_matches_the_published_measurement():
    from lmforge.eval.config import TaskSection
    from lmforge.eval.tasks import get_task

    require((shared_data_dir() / "sst2" / "train.txt").is_file(), "shared SST-2 data missing")
    data = get_task("sst2").load(TaskSection(name="sst2"), ("train", "dev", "test"))
    result = bag_of_words_baseline(
        (data.train.texts, data.train.labels),
        (data.dev.texts, data.dev.labels),
        (data.test.texts, data.test.labels),
    )
    # Issue 15 measured 80.5% for tf-idf + LR with C and n-grams chosen on dev.
    assert 0.79 <= result["bow_acc"] <= 0.83, result
    # The chosen setting's dev accuracy is the best of the grid's (measured: 0.803, C=10 1-2).
    assert 0.78 <= result["bow_dev_acc"] <= 0.82, result
