"""CLI grammar: recipe, positionals, overrides, `--`, flags, --help, errors that say what to type.

Most cases run the real verbs through `cli.main([...])` from an empty working directory, so a
mistyped argument that slipped through would show up as a run dir or a different error.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from lmforge_testing import REPO_ROOT
from pydantic import Field

from lmforge import cli
from lmforge.config import Section, build_config, describe_keys, is_known_key, packaged_recipes_dir
from lmforge.errors import ConfigError
from lmforge.verb import Flags, Verb


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


@pytest.fixture
def in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _error_of(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect a one-line error (exit 2), return it."""
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_positionals_overrides_and_double_dash():
    recipe, overrides, flags, wants_help = cli.parse_args(
        _VERB, ["r.toml", "runs/a", "max_new_tokens=5", "--resume", "--", "x=1 is a prompt"]
    )
    assert recipe == "r.toml" and not wants_help and flags.resume
    assert overrides == {"run": "runs/a", "max_new_tokens": 5, "prompt": "x=1 is a prompt"}
    # After `--` nothing is an option or a setting any more.
    _, overrides, _, wants_help = cli.parse_args(_VERB, ["runs/a", "--", "--help=a b"])
    assert overrides["prompt"] == "--help=a b" and not wants_help


def test_flags_record_the_lmforge_command_not_the_callers_argv():
    _, _, flags, _ = cli.parse_args(_VERB, ["runs/a", "max_new_tokens=5"])
    assert flags.argv == ("lmforge", "gen", "runs/a", "max_new_tokens=5")


def test_extra_positional_and_unknown_flag_are_errors():
    with pytest.raises(ConfigError, match="unexpected argument 'c'"):
        cli.parse_args(_VERB, ["a", "b", "c"])
    with pytest.raises(ConfigError, match="unknown option '--fast'"):
        cli.parse_args(_VERB, ["--fast"])
    with pytest.raises(ConfigError, match="does not apply"):
        cli.parse_args(_VERB, ["--overwrite"])
    with pytest.raises(ConfigError, match="did you mean '--resume'"):
        cli.parse_args(_VERB, ["--resum"])


@pytest.mark.parametrize(
    "typo", ["Train.max_steps=5", "train.max-steps=5", "train.max_steps =5", "TRAIN.MAX_STEPS=5"]
)
def test_a_mistyped_setting_is_an_error_not_the_positional_out(typo, in_empty_dir, capsys):
    err = _error_of(["train", "data=d", "out=runs/x", typo], capsys)
    assert f"'{typo}' is not a key=value setting" in err
    assert "did you mean 'train.max_steps=5'?" in err
    assert list(in_empty_dir.iterdir()) == []  # nothing was trained anywhere


def test_a_dotted_key_without_its_value_is_not_the_positional_out(in_empty_dir, capsys):
    err = _error_of(["train", "data=d", "train.max_steps", "=5"], capsys)
    assert "'train.max_steps' is a config key without a value" in err


def test_a_mistyped_setting_after_double_dash_is_positional():
    _, overrides, _, _ = cli.parse_args(_VERB, ["runs/a", "--", "Hello world=5"])
    assert overrides["prompt"] == "Hello world=5"


def test_paths_and_urls_containing_equals_stay_positional():
    _, overrides, _, _ = cli.parse_args(_VERB, ["runs/lr=3e-4", "url:https://x.org/?a=b"])
    assert overrides == {"run": "runs/lr=3e-4", "prompt": "url:https://x.org/?a=b"}


def test_a_value_given_as_positional_and_as_key_is_an_error(in_empty_dir, capsys):
    err = _error_of(["train", "runs/a", "out=runs/b", "data=d"], capsys)
    assert "OUT is given twice" in err and "'runs/a'" in err and "'runs/b'" in err
    with pytest.raises(ConfigError, match="PROMPT is given twice"):
        cli.parse_args(_VERB, ["prompt=hi", "runs/a", "there"])


def test_unknown_key_names_the_closest_key(in_empty_dir, capsys):
    err = _error_of(["train", "data=d", "train.max_step=5"], capsys)
    assert "unknown config key 'train.max_step'" in err
    assert "did you mean 'train.max_steps=5'?" in err
    err = _error_of(["train", "data=d", "max_steps=5"], capsys)  # the section left out
    assert "did you mean 'train.max_steps=5'?" in err


def test_dashes_before_a_setting_say_drop_the_dashes(in_empty_dir, capsys):
    err = _error_of(["train", "data=d", "--train.max_steps=5"], capsys)
    assert "drop the dashes" in err and "'train.max_steps=5'" in err
    err = _error_of(["train", "data=d", "--max-steps"], capsys)
    assert "drop the dashes" in err and "'train.max_steps=VALUE'" in err


def test_a_prompt_with_equals_says_to_put_it_after_double_dash(in_empty_dir, capsys):
    err = _error_of(["generate", "runs/x", "a=b"], capsys)
    assert "unknown config key 'a'" in err and "put text containing '=' after --" in err
    verb = cli.load_verb("generate")
    _, overrides, _, _ = cli.parse_args(verb, ["runs/x", "--", "a=b"])
    assert overrides == {"run": "runs/x", "prompt": "a=b"}


def test_unknown_verb_names_the_closest_verb(capsys):
    err = _error_of(["trian"], capsys)
    assert "unknown command 'trian'" in err and "did you mean 'train'?" in err
    assert "did you mean" not in _error_of(["frobnicate"], capsys)


@pytest.mark.parametrize("verb", sorted(cli.VERBS))
def test_help_for_every_verb_lists_keys(verb, capsys):
    assert cli.main([verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lmforge " + verb)
    assert "config keys" in out


@pytest.mark.parametrize("name", sorted(cli.VERBS))
def test_the_help_table_summary_is_the_verbs_own(name):
    verb = cli.load_verb(name)
    assert verb.name == name
    assert cli.VERBS[name][1] == verb.summary


def test_main_help_lists_each_verb_with_its_summary_without_importing_verbs():
    code = (
        "import sys, io, contextlib\n"
        "from lmforge.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    main(['--help'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy')\n"
        "               or m.count('.') and m.split('.')[1] in ('train', 'eval', 'infer', 'data',\n"
        "                                                        'finetune', 'interop', 'demo'))\n"
        "import json; print(json.dumps({'help': buf.getvalue(), 'heavy': heavy}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    result = json.loads(proc.stdout)
    assert result["heavy"] == []
    lines = result["help"].splitlines()
    for name, (_, summary) in cli.VERBS.items():
        assert any(line.split() == [name, *summary.split()] for line in lines), name


def test_console_entry_point_runs_as_module():
    proc = subprocess.run(
        [sys.executable, "-m", "lmforge", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and "usage: lmforge VERB" in proc.stdout


# Verbs whose config schema still imports torch (the schema lives in, or next to, torch code);
# remove a name once `lmforge VERB --help` imports neither torch, matplotlib nor tensorboard.
_HELP_STILL_IMPORTS_TORCH: set[str] = set()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                name in _HELP_STILL_IMPORTS_TORCH, strict=True, reason="schema imports torch"
            ),
        )
        for name in sorted(cli.VERBS)
    ],
)
def test_verb_help_imports_no_torch(name):
    code = (
        "import sys, io, contextlib\n"
        "from lmforge.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main([{name!r}, '--help']) == 0\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'torch', 'matplotlib', 'tensorboard'}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert proc.stdout.strip() == "[]"


def test_a_verb_may_name_its_run_function_lazily():
    verb = Verb(name="t", summary="s", config=_GenCfg, run="json:dumps")
    assert verb.run_function() is json.dumps
    called = Verb(name="t", summary="s", config=_GenCfg, run=lambda cfg, flags: 3)
    assert called.execute(_GenCfg(), Flags()) == 3


# --- packaged recipes -------------------------------------------------------------------------


def test_packaged_recipes_are_the_configs_folder():
    packaged = packaged_recipes_dir()
    configs = REPO_ROOT / "configs"
    names = sorted(p.relative_to(configs) for p in configs.rglob("*.toml"))
    assert names and names == sorted(p.relative_to(packaged) for p in packaged.rglob("*.toml"))
    for name in names:  # a broken link (a checkout without symlinks) would differ here
        assert filecmp.cmp(configs / name, packaged / name, shallow=False), name


def test_a_bare_recipe_name_is_the_packaged_recipe_from_any_directory(in_empty_dir):
    verb = cli.load_verb("train")
    recipe, overrides, _, _ = cli.parse_args(verb, ["shakespeare_char", "data=d", "runs/sc"])
    assert recipe == "shakespeare_char" and overrides == {"data": "d", "out": "runs/sc"}
    cfg = build_config(verb.config, recipe, overrides)
    recipe_file = tomllib.loads((REPO_ROOT / "configs" / "shakespeare_char.toml").read_text())
    assert cfg.train.max_time == recipe_file["train"]["max_time"]
    assert cfg.model.max_seq_len == recipe_file["model"]["max_seq_len"]
    # `name.toml` not found in the cwd is the packaged one too; a local file shadows it.
    assert build_config(verb.config, "shakespeare_char.toml", {"data": "d"}) == build_config(
        verb.config, "shakespeare_char", {"data": "d"}
    )
    Path("shakespeare_char.toml").write_text('inherit = "shakespeare_char"\n[train]\nmax_time=5\n')
    assert build_config(verb.config, "shakespeare_char.toml", {"data": "d"}).train.max_time == 5


def test_a_bare_name_that_does_not_fit_the_verb_or_exists_stays_positional(in_empty_dir):
    generate = cli.load_verb("generate")
    recipe, overrides, _, _ = cli.parse_args(generate, ["demo", "Once"])
    assert recipe is None and overrides == {"run": "demo", "prompt": "Once"}
    os.mkdir("demo")
    recipe, overrides, _, _ = cli.parse_args(cli.load_verb("train"), ["demo", "data=d"])
    assert recipe is None and overrides["out"] == "demo"


def test_a_packaged_recipe_used_by_name_is_logged(in_empty_dir, capsys, monkeypatch):
    monkeypatch.setattr(Verb, "execute", lambda self, config, flags: 0)
    assert cli.main(["train", "shakespeare_char_lstm", "data=d"]) == 0
    err = capsys.readouterr().err
    assert "recipe: packaged 'shakespeare_char_lstm'" in err


def test_a_renamed_key_is_accepted_on_the_command_line():
    prepare = cli.load_verb("prepare")
    _, overrides, _, _ = cli.parse_args(prepare, ["a.jsonl", "jsonl_field=body"])
    assert overrides == {"jsonl_field": "body", "source": ["a.jsonl"]}


@pytest.mark.parametrize("name", sorted(cli.VERBS))
def test_every_key_in_a_verbs_help_is_accepted_by_its_key_check(name):
    verb = cli.load_verb(name)
    keys = [row[0] for row in describe_keys(verb.config)]
    assert keys and all(is_known_key(verb.config, key) for key in keys)
