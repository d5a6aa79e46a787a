"""CLI grammar: recipe, positionals, overrides, `--`, flags, --help per verb, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import Field

from lmforge import cli
from lmforge.config import Section
from lmforge.errors import ConfigError
from lmforge.verb import Verb


class _GenCfg(Section):
    run: str = Field("runs/x", description="run dir")
    prompt: str = Field("", description="prompt")
    max_new_tokens: int = Field(10, description="tokens to add")


_VERB = Verb(
    name="gen",
    summary="test verb",
    config=_GenCfg,
    run=lambda cfg, flags: 0,
    positionals=("run", "prompt"),
    flags=("--resume", "--debug", "--help"),
)


def test_positionals_overrides_and_double_dash():
    recipe, overrides, flags, wants_help = cli.parse_args(
        _VERB, ["r.toml", "runs/a", "max_new_tokens=5", "--resume", "--", "x=1 is a prompt"]
    )
    assert recipe == "r.toml" and not wants_help and flags.resume
    assert overrides == {"run": "runs/a", "max_new_tokens": 5, "prompt": "x=1 is a prompt"}


def test_extra_positional_and_unknown_flag_are_errors():
    with pytest.raises(ConfigError, match="unexpected argument 'c'"):
        cli.parse_args(_VERB, ["a", "b", "c"])
    with pytest.raises(ConfigError, match="unknown option '--fast'"):
        cli.parse_args(_VERB, ["--fast"])
    with pytest.raises(ConfigError, match="does not apply"):
        cli.parse_args(_VERB, ["--overwrite"])


def test_unknown_verb_is_one_line_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown command 'frobnicate'" in err[0]


@pytest.mark.parametrize("verb", sorted(cli.VERBS))
def test_help_for_every_verb_lists_keys(verb, capsys):
    assert cli.main([verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lmforge " + verb)
    assert "config keys" in out


def test_console_entry_point_runs_as_module():
    proc = subprocess.run(
        [sys.executable, "-m", "lmforge", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and "usage: lmforge VERB" in proc.stdout
