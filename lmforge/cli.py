"""Command-line entry point: `lmforge VERB [RECIPE.toml] [POSITIONAL ...] [key=value ...]`.

Argument parsing only. An argument matching `^[a-z_][a-z0-9_.]*=` is a config override, one ending
in `.toml` (first position) is a recipe, `--` ends overrides (so a prompt may contain `=`), anything
else is positional. Errors print one line (the traceback only with --debug) and exit non-zero.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

from lmforge.config import build_config, describe_keys, is_override, parse_value, set_dotted
from lmforge.errors import ConfigError, LmforgeError
from lmforge.verb import Flags, Verb

# verb name -> "module:attribute"; imported only when the verb runs.
VERBS: dict[str, str] = {
    "demo": "lmforge.demo:VERB",
    "prepare": "lmforge.data.prepare:VERB",
    "train": "lmforge.train.trainer:VERB",
    "eval": "lmforge.eval.run:VERB",
    "finetune": "lmforge.finetune:VERB",
    "generate": "lmforge.infer.cli:VERB",
    "export": "lmforge.interop.export:VERB",
    "import": "lmforge.interop.importer:VERB",
}

_FLAG_NAMES = {
    "--resume": "resume",
    "--overwrite": "overwrite",
    "--debug": "debug",
    "-i": "interactive",
    "--interactive": "interactive",
}

log = logging.getLogger("lmforge")


def load_verb(name: str) -> Verb:
    """Import and return a verb by name, or raise a ConfigError listing the known verbs."""
    target = VERBS.get(name)
    if target is None:
        raise ConfigError(f"unknown command '{name}'; choose one of: {', '.join(VERBS)}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("lmforge"):
            raise ConfigError(f"command '{name}' is not available in this version") from None
        raise
    return getattr(module, attr)


def parse_args(verb: Verb, args: list[str]) -> tuple[str | None, dict[str, Any], Flags, bool]:
    """Split argv into (recipe, overrides tree, flags, wants_help) following the CLI grammar."""
    recipe: str | None = None
    positionals: list[str] = []
    overrides: dict[str, Any] = {}
    flag_values: dict[str, bool] = {}
    wants_help = False
    overrides_ended = False
    for arg in args:
        if not overrides_ended and arg == "--":
            overrides_ended = True
        elif not overrides_ended and arg in ("-h", "--help"):
            wants_help = True
        elif not overrides_ended and arg in _FLAG_NAMES:
            if arg not in verb.flags and _FLAG_NAMES[arg] not in ("debug",):
                raise ConfigError(f"'{arg}' does not apply to '{verb.name}' ({_flags_hint(verb)})")
            flag_values[_FLAG_NAMES[arg]] = True
        elif not overrides_ended and arg.startswith("-") and len(arg) > 1:
            raise ConfigError(f"unknown option '{arg}' for '{verb.name}' ({_flags_hint(verb)})")
        elif not overrides_ended and is_override(arg):
            key, _, raw = arg.partition("=")
            set_dotted(overrides, key, parse_value(raw))
        elif recipe is None and not positionals and arg.endswith(".toml"):
            recipe = arg
        else:
            positionals.append(arg)
    _assign_positionals(verb, positionals, overrides)
    flags = Flags(argv=tuple(sys.argv), **flag_values)
    return recipe, overrides, flags, wants_help


def _flags_hint(verb: Verb) -> str:
    return "valid options: " + ", ".join(verb.flags)


def _assign_positionals(verb: Verb, positionals: list[str], overrides: dict[str, Any]) -> None:
    keys = list(verb.positionals)
    for i, key in enumerate(keys):
        if key.endswith("*"):
            if positionals[i:]:
                set_dotted(overrides, key[:-1], positionals[i:])
            return
        if i < len(positionals):
            set_dotted(overrides, key, positionals[i])
    if len(positionals) > len(keys):
        extra = positionals[len(keys)]
        raise ConfigError(
            f"unexpected argument '{extra}' for '{verb.name}'; usage: {usage_line(verb)} "
            "(use key=value for settings, or -- before text that contains '=')"
        )


def usage_line(verb: Verb) -> str:
    if verb.usage:
        return verb.usage
    pos = " ".join(
        p.upper().rstrip("*") + ("..." if p.endswith("*") else "") for p in verb.positionals
    )
    return f"lmforge {verb.name} [RECIPE.toml] {pos} [key=value ...]".replace("  ", " ")


def help_text(verb: Verb) -> str:
    """`lmforge VERB --help`: usage plus every config key with type, default and description."""
    rows = describe_keys(verb.config)
    width = max((len(r[0]) for r in rows), default=10)
    type_width = min(max((len(r[1]) for r in rows), default=10), 36)
    lines = [f"usage: {usage_line(verb)}", "", verb.summary]
    lines += ["", "options: " + ", ".join(verb.flags)]
    lines += ["", "config keys (set as key=value, or in a TOML recipe):"]
    for key, type_name, default, desc in rows:
        lines.append(f"  {key:<{width}}  {type_name:<{type_width}}  [{default}]  {desc}")
    return "\n".join(lines)


def main_help() -> str:
    lines = ["usage: lmforge VERB [RECIPE.toml] [POSITIONAL ...] [key=value ...] [--flags]", ""]
    lines.append("verbs:")
    for name in VERBS:
        lines.append(f"  {name}")
    lines.append("")
    lines.append("Run 'lmforge VERB --help' for the keys of one verb.")
    return "\n".join(lines)


def setup_logging(debug: bool) -> None:
    """Library logs go to stderr so stdout carries only results."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("lmforge")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    setup_logging(debug)
    if not args or args[0] in ("-h", "--help", "help"):
        print(main_help())
        return 0
    if args[0] == "--version":
        from lmforge import __version__

        print(__version__)
        return 0
    try:
        verb = load_verb(args[0])
        recipe, overrides, flags, wants_help = parse_args(verb, args[1:])
        if wants_help:
            print(help_text(verb))
            return 0
        config = build_config(verb.config, recipe, overrides)
        code = verb.run(config, flags)
        return int(code or 0)
    except LmforgeError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
