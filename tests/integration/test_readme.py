"""The README's tour runs as written (with tiny step counts appended), like litgpt's test_readme."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LMFORGE = [sys.executable, "-m", "lmforge"]

# Appended to each tour command so the test takes seconds; later keys win over the README's.
_TINY = {
    "train": [
        "train.max_steps=6",
        "model.n_layers=1",
        "model.d_model=32",
        "model.n_heads=2",
        "model.max_seq_len=32",
        "train.batch_size=4",
        "eval.every=3",
        "eval.batches=2",
        "sample.max_new_tokens=8",
    ],
    "eval": ["max_tokens=2000"],
    "generate": ["max_new_tokens=8"],
}


def tour_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"A tour.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md lost its tour block"
    return [
        shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()
    ]


@pytest.mark.slow
def test_readme_tour_runs(tmp_path: Path, shared_data: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    commands = tour_commands()
    assert [c[1] for c in commands] == ["prepare", "train", "eval", "generate", "export"]
    for argv in commands:
        assert argv[0] == "lmforge"
        args = [a.replace("../shared/data", str(shared_data)) for a in argv[1:]]
        args = [str(REPO / a) if a.startswith("configs/") else a for a in args]
        args += _TINY.get(args[0], [])
        proc = subprocess.run(
            LMFORGE + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}"
    assert (tmp_path / "runs/sc/eval/intrinsic.json").is_file()
    assert (tmp_path / "hf/sc/config.json").is_file()
