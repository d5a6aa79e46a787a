"""`executor=ray`: units run as Ray tasks; the data dir is the local executor's, byte for byte.

Uses the session's single-machine Ray cluster (`ray_cluster` in tests/conftest.py).
"""

from __future__ import annotations

import json
import random

from lmforge.config import build_config
from lmforge.data import spool
from lmforge.data.prepare import PrepareConfig, prepare

WORDS = "the of and to in is was for on that with as by at from naïve 東京 😀".split()


def test_ray_executor_equals_local(tmp_path, monkeypatch, ray_cluster):
    rng = random.Random(0)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        lines = [" ".join(rng.choices(WORDS, k=rng.randint(3, 15))) for _ in range(6)]
        (src / f"doc{i:02d}.txt").write_text("\n".join(lines), encoding="utf-8")
    monkeypatch.setattr(spool, "UNIT_BYTES", 2000)  # several units, so several Ray tasks
    results = {}
    for executor in ("local", "ray"):
        overrides = {"source": str(src), "out": str(tmp_path / executor), "executor": executor,
                     "tokenizer": {"kind": "bpe", "vocab_size": 300}}  # fmt: skip
        if executor == "ray":
            overrides["address"] = ray_cluster
        results[executor] = prepare(build_config(PrepareConfig, overrides=overrides))
    local, remote = results["local"], results["ray"]
    assert remote.stats["executor"] == "ray" and remote.stats["units"] >= 3
    files = sorted(p.name for p in local.out.iterdir())
    assert files == sorted(p.name for p in remote.out.iterdir())
    for name in files:
        if name.endswith((".bin", ".json")) and name not in ("meta.json", "stats.json"):
            assert (local.out / name).read_bytes() == (remote.out / name).read_bytes(), name

    def comparable(meta: dict) -> dict:
        meta = json.loads(json.dumps(meta))
        meta.pop("created")
        for key in ("executor", "address", "storage", "workers", "out"):
            meta["config"].pop(key)
        return meta

    assert comparable(local.meta) == comparable(remote.meta)
