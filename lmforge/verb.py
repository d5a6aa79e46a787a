"""What a CLI verb is: a config model, the keys its positional arguments fill, and a run function.

Each stage exports one `Verb` (e.g. `lmforge.data.prepare.VERB`); `cli.py` imports it lazily by
name, so `lmforge prepare` never imports the trainer and nothing runs at import time. `run` may be
given as `"module:function"`: then the module that defines the `Verb` needs only the config schema,
and `lmforge VERB --help` (and argument checking) runs without importing torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

RunFunction = Callable[[Any, "Flags"], "int | None"]


@dataclass(frozen=True)
class Flags:
    """The command-line switches that are not configuration.

    `argv` is the lmforge command as typed (`("lmforge", "train", ...)`), recorded in the run dir.
    """

    resume: bool = False
    overwrite: bool = False
    debug: bool = False
    interactive: bool = False
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verb:
    """A pipeline stage as the CLI sees it.

    `positionals` are the config keys filled, in order, by positional arguments; a key ending in
    `*` takes all the remaining positionals as a list. `run(config, flags)` returns an exit code;
    it is a callable, or `"package.module:function"` imported when the verb runs (`execute`).
    """

    name: str
    summary: str
    config: type[BaseModel]
    run: RunFunction | str
    positionals: tuple[str, ...] = ()
    usage: str = ""
    flags: tuple[str, ...] = field(default=("--debug", "--help"))

    def run_function(self) -> RunFunction:
        """The run function, importing its module now when `run` names it."""
        if callable(self.run):
            return self.run
        module_name, _, attr = self.run.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def execute(self, config: Any, flags: Flags) -> int:
        """Run the verb on a validated config; returns the process exit code."""
        return int(self.run_function()(config, flags) or 0)
