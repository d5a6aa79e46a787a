"""SST-2: binary sentence-level sentiment (Socher et al. 2013), the standard 6920/872/1821 split.

Files `train.txt`, `dev.txt`, `test.txt` in the `<label> <text>` format (0 negative, 1 positive;
lowercased, PTB-tokenised), looked up as `sst2/` in the shared data dir or under `task.dir`.
"""

from __future__ import annotations

from lmforge.eval.tasks.classification import ClassificationSpec, ClassificationTask

TASK = ClassificationTask(
    ClassificationSpec(
        name="sst2",
        dataset="sst2",
        labels=("0", "1"),
        label_names=("negative", "positive"),
        verbalizers=("negative", "positive"),
        template="Review: {text}\nSentiment:",
    )
)
