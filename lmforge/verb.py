"""What a CLI verb is: a config model, the keys its positional arguments fill, and a run function.

Each stage module exports one `Verb` (e.g. `lmforge.data.prepare.VERB`); `cli.py` imports it lazily
by name, so `lmforge prepare` never imports the trainer and nothing runs at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class Flags:
    """The command-line switches that are not configuration."""

    resume: bool = False
    overwrite: bool = False
    debug: bool = False
    interactive: bool = False
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verb:
    """A pipeline stage as the CLI sees it.

    `positionals` are the config keys filled, in order, by positional arguments; a key ending in
    `*` takes all the remaining positionals as a list. `run(config, flags)` returns an exit code.
    """

    name: str
    summary: str
    config: type[BaseModel]
    run: Callable[[Any, Flags], int | None]
    positionals: tuple[str, ...] = ()
    usage: str = ""
    flags: tuple[str, ...] = field(default=("--debug", "--help"))
