"""TREC question classification (Li & Roth 2002), 6 coarse classes, 5452 train / 500 test.

Files `train.txt` and `test.txt` in the `<label> <text>` format, looked up as `trec/` in the shared
data dir or under `task.dir`. There is no dev file, so 10% of train (seeded) is held out as dev.
Label ids follow harvardnlp/sent-conv-torch: 0 DESC, 1 ENTY, 2 ABBR, 3 HUM, 4 LOC, 5 NUM.
"""

from __future__ import annotations

from lmforge.eval.tasks.classification import ClassificationSpec, ClassificationTask

TASK = ClassificationTask(
    ClassificationSpec(
        name="trec",
        dataset="trec",
        dev_file=None,
        labels=("0", "1", "2", "3", "4", "5"),
        label_names=("description", "entity", "abbreviation", "human", "location", "number"),
        verbalizers=("description", "entity", "abbreviation", "person", "place", "number"),
        template="Question: {text}\nAnswer type:",
    )
)
