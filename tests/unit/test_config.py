"""Config plumbing: overrides, recipes with inheritance, validation errors, save/load, help rows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field

from lmforge.config import (
    NamedSection,
    Section,
    build_config,
    describe_keys,
    is_override,
    load_config,
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
