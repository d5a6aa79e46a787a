"""Mistakes a new user makes, tried as they would make them: each gets a specific error that names
the fix, and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.cli import main


def _error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_text_file_as_data_dir(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("input.txt").write_text("some text\n")
    assert main(["train", "data=input.txt", "out=runs/x", "train.max_steps=1"]) == 2
    error = _error(capsys)
    assert "is a file, not a data dir" in error and "lmforge prepare input.txt" in error
    assert not Path("runs").exists()  # a failed start leaves no run dir


def test_an_empty_source_says_it_is_empty(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("empty.txt").write_text("")
    assert main(["prepare", "empty.txt", "out=d", "tokenizer.kind=char"]) == 2
    assert "empty.txt is empty (0 bytes)" in _error(capsys)
    assert not Path("d").exists()


def test_a_rebuild_with_other_settings_names_them(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("hello world\nanother line of text\n")
    assert main(["prepare", "a.txt", "out=d", "tokenizer.kind=char"]) == 0
    assert main(["prepare", "a.txt", "out=d", "tokenizer.kind=byte"]) == 2
    assert "(tokenizer.kind: 'char' -> 'byte')" in _error(capsys)


@pytest.mark.parametrize("max_steps", [5, 20])
def test_warmup_fits_a_short_run(tmp_path: Path, max_steps: int) -> None:
    from lmforge.config import build_config
    from lmforge.run.config import TrainConfig
    from lmforge.train.session import resolve_session
    from lmforge.verb import Flags

    data = tmp_path / "d"
    (tmp_path / "a.txt").write_text("hello world\nanother line of text\n")
    assert main(["prepare", str(tmp_path / "a.txt"), f"out={data}", "tokenizer.kind=char"]) == 0
    cfg = build_config(
        TrainConfig, None, [f"data={data}", f"out={tmp_path / 'r'}", f"train.max_steps={max_steps}"]
    )
    session = resolve_session(cfg, Flags())
    assert session.config.schedule.warmup_steps == max_steps // 10
    assert Path(session.config.data).is_absolute()  # eval works from any directory later
    chosen = build_config(
        TrainConfig,
        None,
        [f"data={data}", "out=r2", "train.max_steps=5", "schedule.warmup_steps=3"],
    )
    assert resolve_session(chosen, Flags()).config.schedule.warmup_steps == 3  # a choice is kept
