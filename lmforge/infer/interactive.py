'''`lmforge generate RUN -i`: an interactive session with a run.

Enter sends a prompt; a line ending in a backslash continues on the next line, and a line holding
only `"""` opens (and closes) a multi-line block. Up/down walk the history (readline, this session).
Ctrl-C stops a generation and returns to the prompt; Ctrl-D or /quit leaves. `/set key=value`
changes a sampling setting for the following prompts. Continuations go to stdout, all else to
stderr.
'''

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from pydantic import ValidationError

from lmforge.config import describe_validation_error, parse_value
from lmforge.infer.beam import beam_texts
from lmforge.infer.generator import GenerationParams, Generator, encode_prompt

BLOCK = '"""'
SETTABLE = (
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "stop",
    "seed",
    "beam_size",
)
HELP = f"""commands:
  /set key=value   change a setting ({", ".join(SETTABLE)}); key=none unsets top_k/top_p/seed
  /show            print the current settings
  /help            this text
  /quit            leave (or Ctrl-D)
input: Enter sends; end a line with \\ to continue it; {BLOCK} on its own line opens/closes a block.
Ctrl-C stops a generation (or clears the line)."""


def run_repl(
    generator: Generator,
    params: GenerationParams,
    cfg,  # noqa: ANN001 - lmforge.infer.cli.GenerateConfig
    input_fn: Callable[[str], str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Read prompts until end of input; returns the exit code (0)."""
    out, err = out or sys.stdout, err or sys.stderr
    if input_fn is None:
        input_fn = _terminal_input if sys.stdin.isatty() else _piped_input
        if sys.stdin.isatty():
            _enable_readline()
    cfg = cfg.model_copy()
    print(f"lmforge interactive session ({cfg.run}); /help for commands, Ctrl-D to leave", file=err)
    while True:
        try:
            text = read_prompt(input_fn)
        except EOFError:
            print(file=err)
            return 0
        except KeyboardInterrupt:
            print("^C", file=err)
            continue
        if not text.strip():
            continue
        if text.startswith("/"):
            if _command(text, cfg, err) == "quit":
                return 0
            params = cfg.params(params.stop_ids)
            continue
        ids = encode_prompt(generator.tokenizer, text)
        try:
            if cfg.beam_size > 1:
                out.write(beam_texts(generator, [ids], params, cfg.beam_size)[0])
            else:
                for _, delta in generator.start([ids], params, stream=True):
                    out.write(delta)
                    out.flush()
        except KeyboardInterrupt:
            print("\n[stopped]", file=err)
            continue
        out.write("\n")
        out.flush()


def read_prompt(input_fn: Callable[[str], str] = input) -> str:
    """One prompt: a line, lines joined by trailing backslashes, or a triple-quoted block."""
    first = input_fn(">>> ")
    if first.strip() == BLOCK:
        lines: list[str] = []
        while (line := input_fn("... ")).strip() != BLOCK:
            lines.append(line)
        return "\n".join(lines)
    lines = [first]
    while lines[-1].endswith("\\"):
        lines[-1] = lines[-1][:-1]
        lines.append(input_fn("... "))
    return "\n".join(lines)


def _command(text: str, cfg, err: TextIO) -> str | None:  # noqa: ANN001 - GenerateConfig
    name, _, arg = text.strip().partition(" ")
    if name in ("/quit", "/exit", "/q"):
        return "quit"
    if name == "/help":
        print(HELP, file=err)
    elif name == "/show":
        print("  ".join(f"{k}={getattr(cfg, k)!r}" for k in SETTABLE), file=err)
    elif name == "/set":
        _set(arg.strip(), cfg, err)
    else:
        print(f"unknown command {name}; /help lists the commands", file=err)
    return None


def _set(arg: str, cfg, err: TextIO) -> None:  # noqa: ANN001 - GenerateConfig
    key, sep, raw = arg.partition("=")
    key = key.strip()
    if not sep or key not in SETTABLE:
        print(f"usage: /set key=value with key one of {', '.join(SETTABLE)}", file=err)
        return
    value = None if raw.strip() in ("none", "None", "") else parse_value(raw.strip())
    try:
        setattr(cfg, key, [] if key == "stop" and value is None else value)
    except ValidationError as exc:
        print(f"error: {describe_validation_error(exc)}", file=err)
        return
    print(f"{key} = {getattr(cfg, key)!r}", file=err)


def _terminal_input(prompt: str) -> str:
    return input(prompt)


def _piped_input(prompt: str) -> str:
    """Like input() but with the prompt on stderr, so piped stdout holds only continuations."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def _enable_readline() -> None:
    """Line editing and an in-session history for `input()` where the platform has readline."""
    try:
        import readline  # noqa: F401 - importing it is what hooks input()
    except ImportError:  # pragma: no cover - Windows
        pass
