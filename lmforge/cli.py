"""Command-line entry point: `lmforge VERB [RECIPE] [POSITIONAL ...] [key=value ...]`.

Argument parsing only. An argument matching `^[a-z_][a-z0-9_.]*=` is a config override and must name
a key of the verb's config; any other argument that tries to be one (`Train.max_steps=5`,
`--lr=1`, `max-steps =5`) is an error naming the closest valid key, so a typo never becomes a
positional. A first argument ending in `.toml`, or naming a packaged recipe that fits the verb, is
the recipe; `--` ends options and overrides (so a prompt may contain `=`); anything else is
positional. Errors print one line (the traceback only with --debug) and exit non-zero.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import re
import sys
from pathlib import Path
from typing import Any

from lmforge.config import (
    build_config,
    closest_key,
    describe_keys,
    is_known_key,
    is_override,
    load_recipe,
    normalize_key,
    packaged_recipe,
    parse_value,
    set_dotted,
)
from lmforge.errors import ConfigError, LmforgeError
from lmforge.verb import Flags, Verb

# verb name -> ("module:attribute", one-line summary). The module is imported only when the verb
# runs or shows its help, so `lmforge --help` imports no verb; a test checks that each summary
# equals its Verb's `summary`.
VERBS: dict[str, tuple[str, str]] = {
    "demo": (
        "lmforge.demo:VERB",
        "Run the whole pipeline on the built-in corpus: prepare -> train -> sample + eval.",
    ),
    "prepare": (
        "lmforge.data.prepare:VERB",
        "Clean and tokenise raw text into a data dir (tokenizer.json, shards, meta.json).",
    ),
    "train": (
        "lmforge.train.verb:VERB",
        "Train a language model on a data dir; writes (or resumes) the run dir `out`.",
    ),
    "eval": (
        "lmforge.eval.verb:VERB",
        "Evaluate runs: loss/perplexity/bits-per-byte, or a task (task=sst2, trec, ...).",
    ),
    "finetune": (
        "lmforge.finetune.verb:VERB",
        "Fine-tune a run for a task: a classifier head (sst2, trec, ...) or SFT (generation).",
    ),
    "generate": (
        "lmforge.infer.config:VERB",
        "Continue a prompt with a trained run (streamed to stdout), or open a session (-i).",
    ),
    "export": (
        "lmforge.interop.config:EXPORT_VERB",
        "Export a run's checkpoint as a Hugging Face model dir (Llama or GPT-2 layout).",
    ),
    "import": (
        "lmforge.interop.config:IMPORT_VERB",
        "Import a local Hugging Face GPT-2 or Llama model dir as an lmforge run dir.",
    ),
    "serve": (
        "lmforge.serve.verb:VERB",
        "Serve a run over an OpenAI-compatible HTTP API (continuous batching, playground).",
    ),
    "fit": (
        "lmforge.lab.fit_config:VERB",
        "Fit scaling laws (Approach 3 and IsoFLOP) to a sweep dir or a table of runs.",
    ),
    "sweep": (
        "lmforge.lab.sweep_config:VERB",
        "Train a grid of model sizes x data/compute budgets; one run dir per point.",
    ),
    "report": (
        "lmforge.lab.report_config:VERB",
        "Write report.html (self-contained) and report.md for a run dir or a sweep dir.",
    ),
}

_FLAG_NAMES = {
    "--resume": "resume",
    "--overwrite": "overwrite",
    "--debug": "debug",
    "-i": "interactive",
    "--interactive": "interactive",
}

# What an argument that *tried* to be `key=value` looks like: word characters, dots, dashes and
# spaces before the first '='. A path or URL (`runs/lr=3e-4`, `url:https://x?a=b`) does not match.
_KEY_ATTEMPT = re.compile(r"^[A-Za-z0-9_.\- ]*[A-Za-z][A-Za-z0-9_.\- ]*=")

log = logging.getLogger("lmforge")


def load_verb(name: str) -> Verb:
    """Import and return a verb by name, or raise a ConfigError naming the closest verb."""
    entry = VERBS.get(name)
    if entry is None:
        guess = difflib.get_close_matches(name, list(VERBS), n=1, cutoff=0.5)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        raise ConfigError(f"unknown command '{name}'; {hint}(commands: {', '.join(VERBS)})")
    module_name, _, attr = entry[0].partition(":")
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
        if overrides_ended:
            positionals.append(arg)
        elif arg == "--":
            overrides_ended = True
        elif arg in ("-h", "--help"):
            wants_help = True
        elif arg in _FLAG_NAMES:
            if arg not in verb.flags and _FLAG_NAMES[arg] != "debug":
                raise ConfigError(f"'{arg}' does not apply to '{verb.name}' ({_flags_hint(verb)})")
            flag_values[_FLAG_NAMES[arg]] = True
        elif arg.startswith("-") and len(arg) > 1:
            raise ConfigError(_unknown_option_message(verb, arg))
        elif is_override(arg):
            key, _, raw = arg.partition("=")
            _check_key(verb, key, arg)
            set_dotted(overrides, key, parse_value(raw))
        elif _KEY_ATTEMPT.match(arg):
            raise ConfigError(_malformed_override_message(verb, arg))
        elif recipe is None and not positionals and _is_recipe(verb, arg):
            recipe = arg
        elif "." in arg and is_known_key(verb.config, arg):
            # `train.max_steps 5` or `"train.max_steps" =5`: a dotted key is never a path here.
            raise ConfigError(f"'{arg}' is a config key without a value; write {arg}=VALUE")
        else:
            positionals.append(arg)
    _assign_positionals(verb, positionals, overrides)
    flags = Flags(argv=("lmforge", verb.name, *args), **flag_values)
    return recipe, overrides, flags, wants_help


def _flags_hint(verb: Verb) -> str:
    return "valid options: " + ", ".join(verb.flags)


def _notes(verb: Verb) -> str:
    """Where the keys are listed and, for verbs that take text or paths, how to pass an '='."""
    text = "; put text containing '=' after --" if verb.positionals else ""
    return f" (lmforge {verb.name} --help lists every key{text})"


def _check_key(verb: Verb, key: str, arg: str) -> None:
    if is_known_key(verb.config, key):
        return
    guess = closest_key(verb.config, key)
    value = arg.partition("=")[2]
    hint = f"; did you mean '{guess}={value}'?" if guess else ""
    raise ConfigError(f"unknown config key '{key}' in '{arg}'{hint}{_notes(verb)}")


def _malformed_override_message(verb: Verb, arg: str) -> str:
    typed, _, value = arg.partition("=")
    guess = closest_key(verb.config, typed)
    hint = f"; did you mean '{guess}={value.strip()}'?" if guess else ""
    return (
        f"'{arg}' is not a key=value setting (keys are lowercase and dotted, with '_', "
        f"no spaces){hint}{_notes(verb)}"
    )


def _unknown_option_message(verb: Verb, arg: str) -> str:
    flag_guess = difflib.get_close_matches(arg, list(verb.flags), n=1, cutoff=0.7)
    if flag_guess:
        return f"unknown option '{arg}' for '{verb.name}'; did you mean '{flag_guess[0]}'?"
    typed, eq, value = arg.partition("=")
    key = normalize_key(typed)
    guess = key if is_known_key(verb.config, key) else closest_key(verb.config, key)
    if guess is not None:
        setting = f"{guess}={value}" if eq else f"{guess}=VALUE"
        return (
            f"'{arg}' is not an option: config keys are set as key=value, so drop the dashes "
            f"and write '{setting}'"
        )
    return f"unknown option '{arg}' for '{verb.name}' ({_flags_hint(verb)})"


def _is_recipe(verb: Verb, arg: str) -> bool:
    """A `.toml` argument, or the bare name of a packaged recipe whose keys are this verb's keys.

    The fit test keeps `lmforge generate demo "..."` meaning the run dir `demo`; an existing path
    of that name also wins (write `./demo` to force a path).
    """
    if arg.endswith(".toml"):
        return True
    packaged = packaged_recipe(arg)
    if packaged is None or Path(arg).exists():
        return False
    return all(is_known_key(verb.config, key) for key in load_recipe(packaged))


def _assign_positionals(verb: Verb, positionals: list[str], overrides: dict[str, Any]) -> None:
    keys = list(verb.positionals)
    for i, key in enumerate(keys):
        if key.endswith("*"):
            if positionals[i:]:
                _refuse_given_twice(verb, key[:-1], " ".join(positionals[i:]), overrides)
                set_dotted(overrides, key[:-1], positionals[i:])
            return
        if i < len(positionals):
            _refuse_given_twice(verb, key, positionals[i], overrides)
            set_dotted(overrides, key, positionals[i])
    if len(positionals) > len(keys):
        extra = positionals[len(keys)]
        raise ConfigError(
            f"unexpected argument '{extra}' for '{verb.name}'; usage: {usage_line(verb)} "
            "(use key=value for settings, or -- before text that contains '=')"
        )


def _refuse_given_twice(verb: Verb, key: str, positional: str, overrides: dict[str, Any]) -> None:
    node: Any = overrides
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    raise ConfigError(
        f"{key.upper()} is given twice for '{verb.name}': '{positional}' as an argument and "
        f"{key}={node!r} as a setting; keep one"
    )


def usage_line(verb: Verb) -> str:
    if verb.usage:
        return verb.usage
    pos = " ".join(
        p.upper().rstrip("*") + ("..." if p.endswith("*") else "") for p in verb.positionals
    )
    return f"lmforge {verb.name} [RECIPE] {pos} [key=value ...]".replace("  ", " ")


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
    """`lmforge --help`: the grammar and each verb with its one-line summary (no verb imported)."""
    width = max(len(name) for name in VERBS)
    lines = ["usage: lmforge VERB [RECIPE] [POSITIONAL ...] [key=value ...] [--flags]", ""]
    lines.append("verbs:")
    for name, (_, summary) in VERBS.items():
        lines.append(f"  {name:<{width}}  {summary}")
    lines.append("")
    lines.append("RECIPE is a .toml file or a packaged recipe's name (e.g. shakespeare_char).")
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


def _log_recipe(recipe: str) -> None:
    packaged = packaged_recipe(recipe)
    if packaged is not None and not Path(recipe).is_file():
        log.info("recipe: packaged '%s' (%s)", Path(recipe).stem, packaged)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    setup_logging(debug)
    if not args or args[0] in ("-h", "--help") or args == ["help"]:
        print(main_help())
        return 0
    if args[0] == "--version":
        from lmforge import __version__

        print(__version__)
        return 0
    if args[0] == "help":  # `lmforge help train` is `lmforge train --help`
        args = [*args[1:], "--help"]
    try:
        verb = load_verb(args[0])
        recipe, overrides, flags, wants_help = parse_args(verb, args[1:])
        if wants_help:
            print(help_text(verb))
            return 0
        if recipe is not None:
            _log_recipe(recipe)
        config = build_config(verb.config, recipe, overrides)
        return verb.execute(config, flags)
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
