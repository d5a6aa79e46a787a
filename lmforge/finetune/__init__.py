"""Fine-tuning: `lmforge finetune` turns a trained run into a new run dir adapted to a task.

`verb.py` dispatches by the task's kind to `sft.py` (generation tasks: response-only loss) or
`classifier.py` (a classification head); both train through `lmforge.train`'s Trainer and publish
their run dir by rename (`publish.py`). Config schema: `config.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmforge.finetune.config import FinetuneConfig
    from lmforge.verb import Flags


def finetune(cfg: FinetuneConfig, flags: Flags | None = None) -> int:
    """Fine-tune as `lmforge finetune` would; returns the exit code (0: done)."""
    from lmforge.finetune.verb import finetune as run_finetune

    return run_finetune(cfg, flags)
