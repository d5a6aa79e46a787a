"""Helpers for the training integration tests: a tiny char data dir and tiny configs."""

from __future__ import annotations

import json
import random
from pathlib import Path

from lmforge.config import build_config
from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.run.config import TrainConfig

WORDS = "the a of to and in that it was for on are as with his they at be this from".split()
WORDS += "lorem ipsum dolor sit amet model token train loss step value data run".split()

# 2 layers, width 32, seq 16: trains in milliseconds per step on one thread.
TINY = {
    "model": {"kind": "gpt", "n_layers": 2, "d_model": 32, "n_heads": 2, "max_seq_len": 16},
    "train": {"batch_size": 4, "max_steps": 12, "log_every": 1, "peak_tflops": 0.1},
    "eval": {"every": 6, "batches": 2},
    "sample": {"max_new_tokens": 8},
    "optim": {"lr": 3e-3},
    "schedule": {"warmup_steps": 2},
}
TINY_LSTM = {**TINY, "model": {"kind": "lstm", "n_layers": 2, "d_model": 16, "d_hidden": 32}}


def write_corpus(path: Path, n_words: int = 6000, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) + "." for _ in range(n_words // 12)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_data_dir(root: Path) -> Path:
    """A char-level data dir of ~30 KB of text (train and val)."""
    corpus = write_corpus(root / "corpus.txt")
    cfg = PrepareConfig(source=str(corpus), out=str(root / "data"), tokenizer={"kind": "char"})
    return prepare(cfg).out


def train_config(data: Path, out: Path, base: dict | None = None, **overrides) -> TrainConfig:
    """TINY (or `base`) plus dotted overrides given as keyword `a__b=value`."""
    dotted = [f"{k.replace('__', '.')}={_toml(v)}" for k, v in overrides.items()]
    merged = {**(base or TINY), "data": str(data), "out": str(out)}
    return build_config(TrainConfig, None, _flatten(merged) + dotted)


def _toml(value) -> str:
    return (
        json.dumps(value)
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def _flatten(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={_toml(value)}")
    return out


def read_rows(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_rows(run_dir) if "loss" in r}
