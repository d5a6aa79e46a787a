"""Config plumbing shared by every verb: TOML recipes, dotted overrides, validation, help text.

The config *models* live next to the code they configure (`data/prepare.py` owns `PrepareConfig`,
...); this module only loads, merges, validates, saves and documents them. Models are pydantic v2
with `extra="forbid"`, so a typo is an error that names the key and the closest valid one. A
recipe is a TOML file or the name of a recipe shipped in `lmforge/recipes/` (the package's view of
`configs/`); it may inherit another with a top-level `inherit = "base.toml"` (a path relative to the
recipe, else a packaged recipe's name). Nothing here imports torch: `--help` must stay fast.
"""

from __future__ import annotations

import difflib
import logging
import re
import sys
import types
import typing
import warnings
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import tomli_w
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.fields import FieldInfo

from lmforge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger(__name__)

OVERRIDE_PATTERN = re.compile(r"^[a-z_][a-z0-9_.]*=")
_INHERIT_KEY = "inherit"
_RECIPE_SUFFIX = ".toml"

# Key types several verbs share. They live here, not in `runtime.py`, so that config schemas can be
# imported (for --help, for validation) without importing torch.
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DtypeName = Literal["float32", "bfloat16", "float16"]
LinearKernelName = Literal["auto", "mkl", "onednn"]


class Section(BaseModel):
    """Base for every config model: unknown keys are errors, assignments are validated.

    `renamed_keys` maps a key's old name to its new one: the old name keeps working (from the
    CLI, in recipes, in saved configs) with a deprecation warning; giving both is an error.
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, protected_namespaces=(), validate_by_name=True
    )
    renamed_keys: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _apply_renamed_keys(cls, data: Any) -> Any:
        if not cls.renamed_keys or not isinstance(data, dict):
            return data
        data = dict(data)
        for old, new in cls.renamed_keys.items():
            if old not in data:
                continue
            value = data.pop(old)
            if new in data and data[new] != value:
                raise ValueError(f"give '{new}' only ('{old}' is its deprecated old name)")
            message = f"config key '{old}' is deprecated; use '{new}'"
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            log.warning(message)
            data[new] = value
        return data


class NamedSection(Section):
    """A section with a `name` key that also accepts the shorthand `section = "value"`.

    So `task=sst2` and `task.name=sst2 task.dev=dev.txt` both work, from the CLI and in TOML.
    """

    @model_validator(mode="before")
    @classmethod
    def _name_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


def is_override(arg: str) -> bool:
    """True when a command-line argument looks like `dotted.key=value`."""
    return bool(OVERRIDE_PATTERN.match(arg))


def parse_value(text: str) -> Any:
    """Parse an override value as a TOML literal (`3`, `1e-3`, `true`, `["a", "b"]`), else a string.

    A bare word such as `corpus.txt` or `bpe` is not valid TOML and so stays a string.
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turn `["a.b=1", "c=x"]` into a nested dict `{"a": {"b": 1}, "c": "x"}`."""
    nested: dict[str, Any] = {}
    for arg in args:
        if not is_override(arg):
            raise ConfigError(f"'{arg}' is not a key=value override (expected e.g. train.lr=3e-4)")
        key, _, raw = arg.partition("=")
        set_dotted(nested, key, parse_value(raw))
    return nested


def set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `tree[a][b][c] = value` for `dotted_key = "a.b.c"`, creating sub-dicts as needed."""
    parts = dotted_key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            # `task=sst2 task.dev=x`: a scalar already given for a section is its `name` shorthand.
            child = {} if child is None else {"name": child}
            node[part] = child
        node = child
    existing = node.get(parts[-1])
    if isinstance(existing, dict) and not isinstance(value, dict):
        existing["name"] = value  # `task.dev=x task=sst2`, the shorthand given last
    else:
        node[parts[-1]] = value


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `update` into a copy of `base`; nested tables merge, everything else replaces."""
    merged: dict[str, Any] = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def packaged_recipes_dir() -> Path:
    """The recipes shipped inside the package: `lmforge/recipes`, a view of `configs/`."""
    return Path(str(resources.files("lmforge").joinpath("recipes")))


def packaged_recipes() -> list[str]:
    """Names of the packaged recipes (`shakespeare_char`, ...); any verb takes one as RECIPE."""
    folder = packaged_recipes_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob(f"*{_RECIPE_SUFFIX}"))


def packaged_recipe(name: str) -> Path | None:
    """The packaged recipe called `name` (`demo` or `demo.toml`), or None when there is none.

    Only a bare name qualifies: anything with a directory part is a path the user meant literally.
    """
    if not name or "/" in name or "\\" in name:
        return None
    stem = name.removesuffix(_RECIPE_SUFFIX)
    if stem not in packaged_recipes():
        return None
    return packaged_recipes_dir() / f"{stem}{_RECIPE_SUFFIX}"


def resolve_recipe(name: str | Path, base_dir: Path | None = None) -> Path:
    """Find a recipe: a file (relative to `base_dir`, default the cwd), else a packaged recipe.

    `name.toml` that exists as a file wins, so a local recipe can shadow a packaged one of the same
    name; a missing one is a ConfigError that lists the packaged recipes and the closest name.
    """
    path = Path(name)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if path.is_file():
        return path.resolve()
    packaged = packaged_recipe(str(name))
    if packaged is not None:
        return packaged.resolve()
    available = packaged_recipes()
    stem = Path(name).name.removesuffix(_RECIPE_SUFFIX)
    guess = _did_you_mean(stem, available)
    hint = f"; did you mean '{guess}'?" if guess else ""
    listed = ", ".join(available) or "none"
    raise ConfigError(
        f"recipe file {path} does not exist and '{stem}' is not a packaged recipe{hint} "
        f"(packaged recipes: {listed})"
    )


def load_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a TOML recipe (a path or a packaged recipe's name), resolving `inherit` chains.

    `inherit = "base.toml"` is looked up next to the inheriting recipe first, then among the
    packaged recipes, so a copied recipe may still inherit `inherit = "shakespeare_char"`.
    """
    resolved = resolve_recipe(path)
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise ConfigError(f"recipe inheritance loops: {chain}; remove one 'inherit' key")
    data = _read_toml(resolved, "recipe")
    parent = data.pop(_INHERIT_KEY, None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"recipe {resolved}: 'inherit' must be a path string, got {parent!r}")
    try:
        parent_path = resolve_recipe(parent, base_dir=resolved.parent)
    except ConfigError as exc:
        raise ConfigError(f"recipe {resolved} inherits a missing recipe: {exc}") from None
    base = load_recipe(parent_path, (*_seen, resolved))
    return deep_merge(base, data)


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist; check the path")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def build_config(
    model: type[M],
    recipe: str | Path | None = None,
    overrides: Mapping[str, Any] | list[str] | None = None,
) -> M:
    """Recipe (optional) + overrides -> a validated config, or a ConfigError naming the key."""
    raw: dict[str, Any] = load_recipe(recipe) if recipe is not None else {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate_config(model, raw, source=str(recipe) if recipe else None)


def validate_config(model: type[M], raw: Mapping[str, Any], source: str | None = None) -> M:
    """Validate a nested dict against `model`; pydantic errors become one-line ConfigErrors."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source, model)) from None


def _user_key_path(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The dotted key as the user typed it: union tags ('gpt') that pydantic inserts are dropped."""
    keys: list[str] = []
    current: list[type[BaseModel]] = [model] if model is not None else []
    skip_tag = False
    for part in loc:
        if skip_tag:
            skip_tag = False
            if isinstance(part, str) and any(_has_kind(m, part) for m in current):
                current = [m for m in current if _has_kind(m, part)]
                continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        keys.append(str(part))
        field = next(
            (m.model_fields.get(str(part)) for m in current if str(part) in m.model_fields), None
        )
        current = _section_models(field.annotation) if field is not None else []
        skip_tag = len(current) > 1
    return keys


def _has_kind(model: type[BaseModel], tag: str) -> bool:
    field = model.model_fields.get("kind")
    return field is not None and field.default == tag


def describe_validation_error(
    exc: ValidationError, source: str | None = None, model: type[BaseModel] | None = None
) -> str:
    """The first validation problem as `key 'a.b' = value: what is wrong (fix)`."""
    err = exc.errors()[0]
    key = ".".join(_user_key_path(model, err["loc"])) or "<root>"
    where = f" (in {source})" if source else ""
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    if err["type"] == "extra_forbidden":
        guess = closest_key(model, key) if model is not None else None
        hint = f"did you mean '{guess}'? (--help lists every key)" if guess else "--help lists keys"
        return f"unknown config key '{key}'{where}; {hint}{more}"
    if err["type"] == "missing":
        return f"missing required config key '{key}'{where}; set it with {key}=...{more}"
    if err["type"] == "union_tag_not_found":
        return f"config section '{key}'{where} needs a 'kind' key; set {key}.kind=...{more}"
    if err["type"] == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return (
            f"config key '{key}.kind' = {ctx.get('tag')!r}{where}: "
            f"choose one of {ctx.get('expected_tags')}{more}"
        )
    value = err.get("input")
    msg = err["msg"].removeprefix("Value error, ")
    if isinstance(value, dict):  # a cross-field check on a whole section
        section = "config" if key == "<root>" else f"config section '{key}'"
        return f"{section}{where}: {msg}{more}"
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"config key '{key}' = {shown}{where}: {msg}{more}"


def to_toml_dict(config: BaseModel) -> dict[str, Any]:
    """A config as plain TOML-writable data (None values dropped; TOML has no null)."""
    return _drop_none(config.model_dump(mode="json"))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value if v is not None]
    return value


def save_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config as TOML (atomically: temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomli_w.dumps(to_toml_dict(config)), encoding="utf-8")
    tmp.replace(path)


def load_config(model: type[M], path: str | Path) -> M:
    """Read a config saved by `save_config` (no inheritance, no overrides)."""
    return validate_config(model, _read_toml(Path(path), "config"), source=str(path))


# ---------------------------------------------------------------------------------------------
# Which dotted keys a model accepts, and the closest one to a mistyped key.


def is_known_key(model: type[BaseModel], dotted_key: str) -> bool:
    """True when `dotted_key=...` names a key of `model` (a leaf, or a section for its shorthand).

    Keys of every alternative of a union section count (`model.d_hidden` is an LSTM key even when
    the default model is a GPT): which alternative applies is for validation to say, with the value.
    """
    models = [model]
    parts = dotted_key.split(".")
    for i, part in enumerate(parts):
        field = next((f for m in models if (f := _field_named(m, part)) is not None), None)
        if field is None:
            return False
        models = _section_models(field.annotation)
        if not models:
            return i == len(parts) - 1 or _takes_any_subkey(field.annotation)
    return True


def _field_named(model: type[BaseModel], key: str) -> FieldInfo | None:
    """The field `key` names in `model`: by name, by alias, or by a deprecated old name."""
    renamed = getattr(model, "renamed_keys", {})
    key = renamed.get(key, key)
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def _takes_any_subkey(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return annotation is Any or origin in (dict, Mapping)


def settable_keys(model: type[BaseModel]) -> list[str]:
    """Every dotted key an override may set: each leaf key, then each section name."""
    leaves = [row[0] for row in describe_keys(model)]
    sections = {leaf.rsplit(".", 1)[0] for leaf in leaves if "." in leaf}
    return leaves + sorted(sections - set(leaves))


def normalize_key(typed: str) -> str:
    """A mistyped key in the grammar's spelling: `--Train.max-steps ` -> `train.max_steps`."""
    return typed.strip().lstrip("-").strip().lower().replace("-", "_").replace(" ", "")


def closest_key(model: type[BaseModel], typed: str) -> str | None:
    """The valid key a user most likely meant by `typed`, or None when nothing is close.

    Tried in order: the key in the grammar's spelling, a unique key with the same last part
    (`max_steps` -> `train.max_steps`), the closest whole key, the closest last part.
    """
    norm = normalize_key(typed)
    if norm and is_known_key(model, norm):
        return norm
    keys = settable_keys(model)
    last = norm.rsplit(".", 1)[-1]
    same_last = [k for k in keys if k.rsplit(".", 1)[-1] == last]
    if len(same_last) == 1:
        return same_last[0]
    whole = _did_you_mean(norm, keys)
    if whole is not None:
        return whole
    by_last = {k.rsplit(".", 1)[-1]: k for k in keys}
    guess = _did_you_mean(last, by_last)
    return by_last[guess] if guess is not None else None


def _did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


# ---------------------------------------------------------------------------------------------
# --help text, generated from the models so that documentation is never written twice.


def describe_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Rows of (dotted key, type, default, description) for every leaf key of a config model."""
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        sub_models = _section_models(field.annotation)
        if sub_models:
            for sub in sub_models:
                rows.extend(describe_keys(sub, f"{key}."))
            continue
        default = "required" if field.is_required() else _show_default(field.get_default())
        rows.append((key, _type_name(field.annotation), default, field.description or ""))
    # Keys of alternative sub-models (e.g. model.* of gpt and lstm) appear once each; a key both
    # define with different types (the `kind` tag) lists every type.
    unique: dict[str, tuple[str, str, str, str]] = {}
    for key, type_name, default, desc in rows:
        if key in unique and type_name not in unique[key][1].split(" | "):
            prev = unique[key]
            unique[key] = (key, f"{prev[1]} | {type_name}", prev[2], prev[3])
        unique.setdefault(key, (key, type_name, default, desc))
    return list(unique.values())


def _section_models(annotation: Any) -> list[type[BaseModel]]:
    """The BaseModel classes inside an annotation (handles unions and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _section_models(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            found.extend(_section_models(arg))
        return found
    return []


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        inner = ", ".join(_type_name(a) for a in typing.get_args(annotation) if a is not Ellipsis)
        return f"list[{inner}]"
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def _show_default(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "{...}"
    return repr(value) if isinstance(value, str) else str(value)
