"""Config plumbing: overrides, recipes with inheritance, validation errors, save/load, help rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import pytest
from pydantic import Field

from lmforge.config import (
    NamedSection,
    Section,
    build_config,
    closest_key,
    describe_keys,
    is_known_key,
    is_override,
    load_config,
    load_recipe,
    packaged_recipe,
    parse_overrides,
    parse_value,
    save_config,
)
from lmforge.errors import ConfigError


class _Optim(Section):
    lr: float = Field(1e-3, description="learning rate")
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.95], description="Adam betas")


class _A(Section):
    kind: Literal["a"] = "a"
    width: int = Field(32, description="width")


class _B(Section):
    kind: Literal["b"] = "b"
    depth: int = Field(2, description="depth")


class _Task(NamedSection):
    name: str = Field("none", description="task name")
    dev: str | None = Field(None, description="dev file")


class _Cfg(Section):
    out: str = Field("runs/x", description="run dir")
    steps: int = Field(10, gt=0, description="steps")
    optim: _Optim = Field(default_factory=_Optim)
    model: Annotated[_A | _B, Field(discriminator="kind")] = Field(default_factory=_A)
    task: _Task = Field(default_factory=_Task)
    init_from: str | None = Field(None, alias="from", description="init from")


def test_override_detection_follows_the_grammar():
    assert is_override("train.lr=3e-4")
    assert is_override("out=runs/x")
    assert not is_override("runs/x")
    assert not is_override("Hello=world")  # capitalised: a prompt, not a key
    assert not is_override("--resume")


def test_values_parse_as_toml_literals_or_strings():
    assert parse_value("3") == 3
    assert parse_value("1e-3") == pytest.approx(1e-3)
    assert parse_value("true") is True
    assert parse_value('["a", "b"]') == ["a", "b"]
    assert parse_value("corpus.txt") == "corpus.txt"
    assert parse_value("a=b") == "a=b"


def test_overrides_nest_and_validate():
    cfg = build_config(_Cfg, None, ["optim.lr=0.5", "steps=3", "model.kind=b", "model.depth=7"])
    assert cfg.optim.lr == 0.5 and cfg.steps == 3
    assert isinstance(cfg.model, _B) and cfg.model.depth == 7


def test_named_section_shorthand_in_either_order():
    a = build_config(_Cfg, None, ["task=sst2", "task.dev=d.txt"])
    b = build_config(_Cfg, None, ["task.dev=d.txt", "task=sst2"])
    assert a.task.name == b.task.name == "sst2"
    assert a.task.dev == b.task.dev == "d.txt"


def test_alias_keys_work_from_overrides_and_help():
    cfg = build_config(_Cfg, None, ["from=runs/base"])
    assert cfg.init_from == "runs/base"
    assert "from" in [row[0] for row in describe_keys(_Cfg)]


def test_unknown_key_error_names_key_and_fix():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'.*--help"):
        build_config(_Cfg, None, ["optim.lrr=1"])


def test_bad_value_error_names_key_and_value():
    with pytest.raises(ConfigError, match=r"config key 'steps' = 0.*greater than 0"):
        build_config(_Cfg, None, ["steps=0"])
    with pytest.raises(ConfigError, match=r"config key 'optim.lr' = 'fast'"):
        build_config(_Cfg, None, ["optim.lr=fast"])


def test_not_an_override_is_rejected():
    with pytest.raises(ConfigError, match="not a key=value override"):
        parse_overrides(["runs/x"])


def test_recipe_inheritance_and_override_precedence(tmp_path: Path):
    (tmp_path / "base.toml").write_text("steps = 5\n[optim]\nlr = 0.1\nbetas = [0.8, 0.9]\n")
    (tmp_path / "child.toml").write_text('inherit = "base.toml"\n[optim]\nlr = 0.2\n')
    cfg = build_config(_Cfg, tmp_path / "child.toml", ["steps=6"])
    assert cfg.steps == 6 and cfg.optim.lr == 0.2 and cfg.optim.betas == [0.8, 0.9]


def test_recipe_errors_are_specific(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(_Cfg, tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("steps = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_config(_Cfg, tmp_path / "bad.toml")
    (tmp_path / "loop.toml").write_text('inherit = "loop.toml"\n')
    with pytest.raises(ConfigError, match="inheritance loops"):
        build_config(_Cfg, tmp_path / "loop.toml")
    (tmp_path / "typo.toml").write_text("stepz = 1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'stepz'.*typo\.toml"):
        build_config(_Cfg, tmp_path / "typo.toml")


def test_save_load_round_trip(tmp_path: Path):
    cfg = build_config(_Cfg, None, ["model.kind=b", "optim.lr=0.25", "from=runs/z"])
    save_config(cfg, tmp_path / "config.toml")
    assert load_config(_Cfg, tmp_path / "config.toml") == cfg


def test_help_rows_cover_every_leaf_with_type_default_and_description():
    rows = {key: (typ, default, desc) for key, typ, default, desc in describe_keys(_Cfg)}
    assert rows["optim.lr"] == ("float", "0.001", "learning rate")
    assert "model.width" in rows and "model.depth" in rows
    assert rows["model.kind"][0] == "a | b"


def test_errors_inside_a_union_name_the_key_without_the_tag():
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.depth'"):
        build_config(_Cfg, None, ["model.kind=a", "model.depth=3"])  # depth belongs to b
    with pytest.raises(ConfigError, match=r"'model\.kind' = 'c'.*choose one of"):
        build_config(_Cfg, None, ["model.kind=c"])


def test_a_missing_inherited_recipe_names_the_recipe_that_inherits_it(tmp_path: Path):
    (tmp_path / "child.toml").write_text('inherit = "bse.toml"\nsteps = 2\n')
    with pytest.raises(ConfigError) as info:
        build_config(_Cfg, tmp_path / "child.toml")
    message = str(info.value)
    assert f"recipe {tmp_path / 'child.toml'} inherits a missing recipe" in message
    assert str(tmp_path / "bse.toml") in message and "does not exist" in message


def test_a_missing_packaged_recipe_names_the_closest_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'shakespeare_char'"):
        load_recipe("shakespear_char")
    assert packaged_recipe("shakespeare_char") == packaged_recipe("shakespeare_char.toml")
    assert packaged_recipe("configs/shakespeare_char.toml") is None  # a path is meant literally


def test_recipes_inherit_packaged_recipes_by_name(tmp_path: Path):
    (tmp_path / "mine.toml").write_text('inherit = "demo"\n[train]\nmax_steps = 7\n')
    merged = load_recipe(tmp_path / "mine.toml")
    demo = load_recipe("demo")
    assert merged["train"]["max_steps"] == 7 and merged["model"] == demo["model"]


def test_unknown_key_in_a_recipe_names_the_closest_key(tmp_path: Path):
    (tmp_path / "typo.toml").write_text("[optim]\nlrr = 1\n")
    with pytest.raises(
        ConfigError, match=r"'optim\.lrr' \(in .*typo\.toml\); did you mean 'optim\.lr'"
    ):
        build_config(_Cfg, tmp_path / "typo.toml")


def test_known_keys_follow_sections_unions_and_aliases():
    for key in ("steps", "optim.lr", "model.width", "model.depth", "task", "task.dev", "from"):
        assert is_known_key(_Cfg, key), key
    for key in ("optim.lrr", "steps.x", "Optim.lr", "optim", "model.kind.x", "optim..lr"):
        assert is_known_key(_Cfg, key) is (key == "optim"), key


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("Optim.LR", "optim.lr"),
        ("optim.lrr", "optim.lr"),
        ("lr", "optim.lr"),
        ("--optim.betas ", "optim.betas"),
        ("model.dept", "model.depth"),
        ("stepz", "steps"),
        ("zzzz", None),
    ],
)
def test_closest_key(typed, meant):
    assert closest_key(_Cfg, typed) == meant


def test_the_config_module_imports_no_torch():
    code = "import sys, lmforge.config; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


class _Renamed(Section):
    renamed_keys: ClassVar[dict[str, str]] = {"old_steps": "steps"}
    steps: int = Field(1, description="steps")
    optim: _Optim = Field(default_factory=_Optim)


def test_a_renamed_key_keeps_its_old_name_with_a_warning(tmp_path: Path):
    with pytest.warns(DeprecationWarning, match="'old_steps' is deprecated; use 'steps'"):
        assert build_config(_Renamed, None, ["old_steps=4"]).steps == 4
    assert is_known_key(_Renamed, "old_steps") and not is_known_key(_Renamed, "old_stepz")
    with pytest.raises(ConfigError, match="give 'steps' only"):
        build_config(_Renamed, None, ["old_steps=4", "steps=5"])
