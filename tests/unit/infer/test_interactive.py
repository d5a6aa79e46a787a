"""The interactive session's logic: multi-line input, /set, and Ctrl-C stopping a generation
without leaving the session."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from lmforge.infer.cli import GenerateConfig
from lmforge.infer.generator import GenerationParams, Generator
from lmforge.infer.interactive import read_prompt, run_repl
from lmforge.run.rundir import load_run


def _inputs(lines: list[str]):  # noqa: ANN202
    it: Iterator[str] = iter(lines)

    def fake_input(prompt: str) -> str:
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    return fake_input


def test_read_prompt_joins_lines() -> None:
    assert read_prompt(_inputs(["one line"])) == "one line"
    assert read_prompt(_inputs(["first \\", "second\\", "third"])) == "first \nsecond\nthird"
    assert read_prompt(_inputs(['"""', "a", "", "b", '"""'])) == "a\n\nb"


class _InterruptOnce(io.StringIO):
    """A stdout whose first write of generated text raises KeyboardInterrupt (a Ctrl-C)."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def write(self, text: str) -> int:
        if not self.interrupted and text.strip():
            self.interrupted = True
            raise KeyboardInterrupt
        return super().write(text)


def test_ctrl_c_stops_a_generation_and_the_session_goes_on(gpt_run) -> None:  # noqa: ANN001
    run = load_run(gpt_run)
    gen = Generator(run.model, run.tokenizer)
    cfg = GenerateConfig(run=str(gpt_run), temperature=0, max_new_tokens=6)
    params = cfg.params((run.tokenizer.eot_id,))
    out, err = _InterruptOnce(), io.StringIO()
    lines = ["hello", "/set top_k=abc", "/set seed=3", "/bogus", "hello", "/quit", "never read"]
    code = run_repl(gen, params, cfg, _inputs(lines), out, err)
    assert code == 0
    expected = gen.generate([run.tokenizer.encode("hello")], params)[0].text
    assert out.getvalue() == expected + "\n"  # only the second generation completed
    log = err.getvalue()
    assert "[stopped]" in log and "error: config key 'top_k'" in log
    assert "seed = 3" in log and "unknown command /bogus" in log


def test_end_of_input_leaves(gpt_run) -> None:  # noqa: ANN001
    run = load_run(gpt_run)
    cfg = GenerateConfig(run=str(gpt_run))
    params = GenerationParams(max_new_tokens=2)
    err = io.StringIO()
    assert (
        run_repl(Generator(run.model, run.tokenizer), params, cfg, _inputs([]), io.StringIO(), err)
        == 0
    )
    with pytest.raises(EOFError):
        read_prompt(_inputs([]))
