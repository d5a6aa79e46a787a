"""`lmforge generate` end to end in a subprocess: stdout is exactly the streamed continuation,
stats and notes go to stderr, prompts=FILE gives JSONL, -i reads prompts until end of input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tokenizers

from lmforge.infer.cli import GenerateConfig, read_prompts
from lmforge.infer.generator import GenerationParams, Generator, encode_prompt
from lmforge.infer.inference_model import prepare_for_decoding
from lmforge.run.rundir import load_run

REPO = Path(__file__).resolve().parents[3]
PROMPT = "the straße, héllo wo"


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lmforge", "generate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def _greedy_text(run_dir: Path, prompt: str, n: int) -> tuple[list[int], str]:
    run = load_run(run_dir)
    ids = encode_prompt(run.tokenizer, prompt)
    params = GenerationParams(max_new_tokens=n, temperature=0, stop_ids=(run.tokenizer.eot_id,))
    model = prepare_for_decoding(run.model)  # as `lmforge generate` lays out the weights
    completion = Generator(model, run.tokenizer).generate([ids], params)[0]
    return completion.token_ids, run.tokenizer.decode(completion.token_ids)


def test_prompt_is_encoded_exactly_as_tokenizer_json(gpt_run: Path) -> None:
    raw = tokenizers.Tokenizer.from_file(str(gpt_run / "tokenizer.json"))
    run = load_run(gpt_run)
    assert encode_prompt(run.tokenizer, PROMPT) == raw.encode(PROMPT, add_special_tokens=False).ids
    assert encode_prompt(run.tokenizer, PROMPT) == raw.encode(PROMPT).ids  # no hidden BOS/EOS
    assert encode_prompt(run.tokenizer, "") == [run.tokenizer.eot_id]


def test_stdout_is_only_the_continuation(gpt_run: Path) -> None:
    ids, text = _greedy_text(gpt_run, PROMPT, 30)
    assert ids  # the random model produced something
    proc = _cli(str(gpt_run), PROMPT, "max_new_tokens=30", "temperature=0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == text
    assert "new tokens" in proc.stderr and "tokens/s" in proc.stderr


def test_long_prompt_is_cropped_with_a_note_and_files_give_jsonl(tmp_path, run_factory) -> None:  # noqa: ANN001
    run_dir = run_factory(tmp_path / "run", "gpt", max_seq_len=16)
    long_prompt = "abcdefghij" * 4
    prompts = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "hello", "id": 7}, {"prompt": long_prompt}]
    prompts.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    proc = _cli(str(run_dir), f"prompts={prompts}", "max_new_tokens=12", "temperature=0")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["hello", long_prompt]
    assert rows[0]["id"] == 7 and rows[0]["sample"] == 0
    for row in rows:
        assert row["completion"] == _greedy_text(run_dir, row["prompt"], 12)[1]
    assert "prompt has 40 tokens but the model's context is 16" in proc.stderr


def test_interactive_session_reads_until_end_of_input(gpt_run: Path) -> None:
    _, first = _greedy_text(gpt_run, "hello", 8)
    _, second = _greedy_text(gpt_run, "ab\ncd", 8)
    session = "/set temperature=0\n/set max_new_tokens=8\nhello\nab\\\ncd\n/show\n"
    proc = _cli(str(gpt_run), "-i", stdin=session)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == first + "\n" + second + "\n"
    assert "temperature = 0" in proc.stderr and "max_new_tokens=8" in proc.stderr


def test_config_errors_are_one_line() -> None:
    proc = _cli("no/such/run", "hi")
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1
    assert "no/such/run" in proc.stderr
    assert GenerateConfig(stop="\\n").stop == ["\n"]
    assert GenerateConfig(stop=["a", "\\t"]).stop == ["a", "\t"]


def test_read_prompts_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n', encoding="utf-8")
    with pytest.raises(Exception, match=r"bad.jsonl:2 needs a \"prompt\""):
        read_prompts(bad)
    plain = tmp_path / "p.txt"
    plain.write_text("one\n\ntwo\n", encoding="utf-8")
    assert read_prompts(plain) == [{"prompt": "one"}, {"prompt": "two"}]
