"""The bag-of-words baseline of SST-2 and TREC on dev and test: the target a fine-tuned model meets.

Every classification report carries this baseline (`lmforge.eval.baselines`: tf-idf + logistic
regression, C and n-grams chosen on dev); this records it once per task, with the chosen setting's
dev accuracy beside its test accuracy, so dev-only experiments (`classifier_variants.py`) have
their target on the split they are chosen on. No model and no torch: it runs in seconds.
Writes `benchmarks/results/bag_of_words.json` (table `baselines`).
Usage: `python benchmarks/bag_of_words.py`.
"""

from __future__ import annotations

import time

from results_io import RESULTS, render, table, write_result

from lmforge.eval.baselines import bag_of_words_baseline
from lmforge.eval.config import TaskSection
from lmforge.eval.tasks import get_task

TASKS = ("sst2", "trec")
COLUMNS = [
    ["task", "task", ""],
    ["chosen on dev", "setting", ""],
    ["dev acc", "dev_acc", ".3f"],
    ["test acc", "test_acc", ".3f"],
    ["test macro-F1", "test_macro_f1", ".3f"],
    ["train", "n_train", "d"],
    ["dev", "n_dev", "d"],
    ["test", "n_test", "d"],
    ["seconds", "seconds", ".1f"],
]


def main() -> None:
    rows = []
    for name in TASKS:
        data = get_task(name).load(TaskSection(name=name), ("train", "dev", "test"))
        assert data.train is not None and data.dev is not None and data.test is not None
        start = time.perf_counter()
        result = bag_of_words_baseline(
            (data.train.texts, data.train.labels),
            (data.dev.texts, data.dev.labels),
            (data.test.texts, data.test.labels),
        )
        if not result:
            raise SystemExit("scikit-learn is not installed: pip install 'lmforge[baselines]'")
        rows.append(
            {
                "task": name,
                "setting": result["bow_setting"],
                "dev_acc": result["bow_dev_acc"],
                "test_acc": result["bow_acc"],
                "test_macro_f1": result["bow_macro_f1"],
                "n_train": len(data.train.texts),
                "n_dev": len(data.dev.texts),
                "n_test": len(data.test.texts),
                "seconds": time.perf_counter() - start,
            }
        )
        print(f"{name}: {rows[-1]}", flush=True)
    spec = table(COLUMNS, rows)
    payload = {"benchmark": "bag_of_words", "tables": {"baselines": spec}}
    path = write_result(RESULTS / "bag_of_words.json", payload, threads=1)  # saga: one thread
    print(render(spec))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
