"""Multi30k machine translation (Elliott et al. 2016), English<->German: `multi30k_en_de`, `_de_en`.

Files from the official raw release (`multi30k/` in the shared data dir, or `task.dir`):
line-aligned `train`, `val` (our dev) and `test_2016_flickr` (the standard test set), `.en`/`.de`,
gzipped or not. `task.train|dev|test` may name another prefix (`path/test_2017_flickr`).
Prompt `English: {source}\\nGerman:`, answer ` {target}`; scored with sacrebleu BLEU and chrF.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from lmforge.errors import DataError
from lmforge.eval.bleu import corpus_bleu, corpus_chrf
from lmforge.eval.config import TaskSection
from lmforge.eval.generation import Example, GenerationTask
from lmforge.eval.tasks.files import dataset_dir

DATASET = "multi30k"
LANGUAGES = {"en": "English", "de": "German"}
SPLIT_PREFIX = {"train": "train", "dev": "val", "test": "test_2016_flickr"}
TEMPLATE = "{src_name}: {source}\n{tgt_name}:"


def read_lines(prefix: Path, lang: str) -> list[str]:
    """Lines of `<prefix>.<lang>.gz` or `<prefix>.<lang>` (newline stripped, nothing else)."""
    for path in (Path(f"{prefix}.{lang}.gz"), Path(f"{prefix}.{lang}")):
        if path.is_file():
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as f:
                return [line.rstrip("\n") for line in f]
    raise DataError(
        f"no {prefix}.{lang}.gz or {prefix}.{lang}; set task.dir=FOLDER (the multi30k raw files) "
        "or task.<split>=PATH_PREFIX"
    )


class Multi30kTask(GenerationTask):
    stop = ("\n",)  # one sentence per answer
    max_new_tokens = 96

    def __init__(self, src: str, tgt: str) -> None:
        self.src, self.tgt = src, tgt
        self.name = f"multi30k_{src}_{tgt}"

    def _prefix(self, split: str, cfg: TaskSection) -> Path:
        explicit = getattr(cfg, split)
        if explicit:
            return Path(explicit)
        folder = dataset_dir(DATASET, cfg.dir)
        if folder is None:
            raise DataError(
                f"task {self.name}: the '{DATASET}' folder was not found under "
                "$LMFORGE_SHARED_DATA or ../shared/data; set task.dir=FOLDER"
            )
        return folder / SPLIT_PREFIX[split]

    def examples(self, split: str, cfg: TaskSection) -> list[Example]:
        prefix = self._prefix(split, cfg)
        sources, targets = read_lines(prefix, self.src), read_lines(prefix, self.tgt)
        if len(sources) != len(targets):
            raise DataError(
                f"{prefix}: {len(sources)} {self.src} lines but {len(targets)} {self.tgt} lines; "
                "the two files must be line-aligned"
            )
        template = cfg.template or TEMPLATE
        names = {"src_name": LANGUAGES[self.src], "tgt_name": LANGUAGES[self.tgt]}
        out = []
        for i, (source, target) in enumerate(zip(sources, targets, strict=True)):
            prompt = template.format(source=source.strip(), **names)
            response = cfg.target_delimiter + target.strip()
            out.append(Example(prompt, response, (target.strip(),), f"{split}-{i}"))
        return out

    def score(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        references = [e.references[0] for e in examples]
        return {
            "bleu": corpus_bleu(predictions, references),
            "chrf": corpus_chrf(predictions, references),
        }


EN_DE = Multi30kTask("en", "de")
DE_EN = Multi30kTask("de", "en")
