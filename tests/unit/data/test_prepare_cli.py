"""`lmforge prepare` from the command line: defaults, report, one-line errors, a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmforge import cli
from lmforge.data.reader import DataDir
from lmforge.errors import DataError

LMFORGE = Path(sys.executable).parent / "lmforge"


def test_no_arguments_builds_pydocs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["prepare"]) == 0
    out = capsys.readouterr().out
    assert "out not set; writing to data/pydocs" in out
    assert "read" in out and "nfc" in out and "tokenizer: bpe, vocab 4,096" in out
    data = DataDir.open(tmp_path / "data" / "pydocs")
    assert data.vocab_size == 4096 and data.num_tokens("train") > 300_000
    assert data.meta["documents"]["val"] > 10
    assert cli.main(["prepare"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_positional_sources_and_overrides(tmp_path, capsys):
    for i in range(4):
        (tmp_path / f"{i}.md").write_text(f"document {i}\n" * 5)
    out = tmp_path / "d"
    args = ["prepare", str(tmp_path / "0.md"), str(tmp_path / "1.md"), f"out={out}"]
    assert cli.main([*args, "tokenizer.kind=byte", "clean.whitespace=true"]) == 0
    report = capsys.readouterr().out
    assert "whitespace" in report and "tokenizer: byte, vocab 257" in report
    assert DataDir.open(out).meta["sources"] == [str(tmp_path / "0.md"), str(tmp_path / "1.md")]
    # A different config needs --overwrite; the error is one line on stderr.
    assert cli.main([*args, "tokenizer.kind=char"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert cli.main([*args, "tokenizer.kind=char", "--overwrite"]) == 0


def test_failing_command_prints_at_most_three_lines(tmp_path):
    result = subprocess.run(
        [str(LMFORGE), "prepare", str(tmp_path / "missing.txt"), f"out={tmp_path / 'd'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and result.stdout.strip().startswith("out") is False
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 3 and "missing.txt' does not exist" in lines[-1]


def test_killed_run_leaves_nothing_a_later_run_trusts(shared_data, tmp_path):
    out = tmp_path / "ts"
    source = str(shared_data / "tinyshakespeare" / "input.txt")
    args = ["prepare", source, f"out={out}", "tokenizer.vocab_size=2000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmforge", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    partial = tmp_path / "ts.partial"
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not out.exists() and partial.is_dir()  # never taken for a data dir
    with pytest.raises(DataError, match="no meta.json"):
        DataDir.open(partial)
    assert cli.main(args) == 0  # the same command resumes (or restarts) the build
    assert DataDir.open(out).num_tokens("val") > 0 and not partial.exists()


def test_ctrl_c_with_workers_prints_one_line_and_cleans_up(shared_data, tmp_path):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    # Enough BPE work (~20 MB, several seconds on 2 cores) that the run is surely still in its
    # worker stage when the signal lands: a SIGINT during interpreter shutdown kills the process
    # with the default action (-2), which is right for a finished run and not what this tests.
    for i in range(20):
        (tmp_path / f"part{i}.txt").write_text(text)
    out = tmp_path / "d"
    args = ["prepare", str(tmp_path), f"out={out}", "tokenizer.vocab_size=2000", "workers=2"]
    proc = subprocess.Popen(
        [str(LMFORGE), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    # Wait for the worker pool (the resource tracker and two workers are its children), and a
    # little more: Ctrl-C in the few milliseconds while the pool starts is ignored by design.
    while time.monotonic() < deadline and proc.poll() is None:
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        if len(children.stdout.split()) >= 3:
            break
        time.sleep(0.01)
    time.sleep(0.3)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole group gets SIGINT
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "error: interrupted"
    assert not out.exists() and (tmp_path / "d.partial").is_dir()
