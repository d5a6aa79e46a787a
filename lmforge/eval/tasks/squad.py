"""SQuAD v1.1 extractive question answering (Rajpurkar et al. 2016): context + question -> answer.

Only the official dev file is shipped (`squad_v1.1/dev-v1.1.json.gz`), so it is split by article
with a fixed seed: 36 articles train, 4 dev, 8 test (no paragraph is shared across splits).
`task.train|dev|test` may instead name SQuAD-format JSON files (`.json` or `.json.gz`). Prompt
`Context: ...\\nQuestion: ...\\nAnswer:`, answer ` {first reference}`; scored with the official
normalisation, exact match and F1, beside two model-free baselines (squad_metrics.py).

A run fine-tuned with `qa.head=span` (it holds `span_qa/`) is not asked to write its answer: its
span head points at it in the context (`lmforge/eval/span_qa.py`, the fine-tuning's own decoder),
and the report says `scoring: span` (`generative` otherwise).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.errors import DataError
from lmforge.eval.config import EvalConfig, TaskSection
from lmforge.eval.generation import Example, GenerationTask
from lmforge.eval.squad_metrics import (
    first_sentence_baseline,
    overlap_span_baseline,
    squad_scores,
)
from lmforge.eval.tasks.files import dataset_dir

if TYPE_CHECKING:
    from lmforge.run.rundir import LoadedRun

DATASET = "squad_v1.1"
FILENAME = "dev-v1.1.json.gz"
SPLIT_SEED = 1234  # fixed, so every run and every model sees the same article split
SPLIT_ARTICLES = {"train": 36, "dev": 4}  # the rest (8 of 48) is test
TEMPLATE = "Context: {context}\nQuestion: {question}\nAnswer:"


def read_squad(path: Path) -> list[dict[str, Any]]:
    """The `data` list (articles) of a SQuAD-format JSON file, gzipped or not."""
    if not path.is_file():
        raise DataError(f"SQuAD file {path} does not exist; set task.dir=FOLDER or task.test=FILE")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a SQuAD JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f'{path} has no "data" list of articles; is it SQuAD v1.1 format?')
    return data["data"]


def split_articles(articles: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """This split's articles under the fixed seeded shuffle."""
    order = list(range(len(articles)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_train, n_dev = SPLIT_ARTICLES["train"], SPLIT_ARTICLES["dev"]
    if len(articles) < n_train + n_dev + 1:
        raise DataError(f"{len(articles)} SQuAD articles cannot be split {n_train}/{n_dev}/rest")
    bounds = {"train": (0, n_train), "dev": (n_train, n_train + n_dev)}
    lo, hi = bounds.get(split, (n_train + n_dev, len(articles)))
    return [articles[i] for i in order[lo:hi]]


class SquadTask(GenerationTask):
    name = "squad"
    stop = ("\n",)
    max_new_tokens = 32

    def articles(self, split: str, cfg: TaskSection) -> list[dict[str, Any]]:
        explicit = getattr(cfg, split)
        if explicit:
            return read_squad(Path(explicit))
        folder = dataset_dir(DATASET, cfg.dir)
        if folder is None:
            raise DataError(
                f"task squad: the '{DATASET}' folder was not found under $LMFORGE_SHARED_DATA "
                "or ../shared/data; set task.dir=FOLDER"
            )
        return split_articles(read_squad(folder / FILENAME), split)

    def examples(self, split: str, cfg: TaskSection) -> list[Example]:
        template = cfg.template or TEMPLATE
        out = []
        for article in self.articles(split, cfg):
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))
                    if not answers:
                        continue
                    question = qa["question"].strip()
                    prompt = template.format(context=context, question=question)
                    fields = {"context": context, "question": question}
                    response = cfg.target_delimiter + answers[0]
                    out.append(Example(prompt, response, answers, qa["id"], fields))
        return out

    def evaluate(self, run: LoadedRun, cfg: EvalConfig) -> dict[str, Any]:
        """A span-QA run by its span head, any other run by generating its answers."""
        from lmforge.eval.span_qa import evaluate_span_run, is_span_run

        if is_span_run(run.run_dir):
            return evaluate_span_run(self, run, cfg)
        return super().evaluate(run, cfg)

    def score(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        return squad_scores(predictions, [list(e.references) for e in examples])

    def baselines(self, examples: list[Example]) -> dict[str, float]:
        answers = [list(e.references) for e in examples]
        out: dict[str, float] = {}
        for name, guess in (
            ("first_sentence", first_sentence_baseline),
            ("overlap", overlap_span_baseline),
        ):
            preds = [guess(e.fields["context"], e.fields["question"]) for e in examples]
            scores = squad_scores(preds, answers)
            out[f"baseline_{name}_exact_match"] = scores["exact_match"]
            out[f"baseline_{name}_f1"] = scores["f1"]
        return out


TASK = SquadTask()
