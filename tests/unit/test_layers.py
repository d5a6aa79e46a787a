"""The import layers are a rule, checked here: every `lmforge` import, read with `ast`.

Imports inside functions, under `if TYPE_CHECKING:` and relative imports all count; there is no
list of exceptions. A room may import its own modules, the base layer and any room on a lower
layer, never a room on its own layer or above; and no chain of imports may come back to where it
started. The layers are documented in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lmforge

PACKAGE = Path(lmforge.__file__).parent

# Lowest first. A room is a subpackage (`lmforge/train/`) or a top-level module (`lmforge/cli.py`);
# the base layer's modules count as one room.
LAYERS: list[set[str]] = [
    {"base"},
    {"data", "models"},
    {"run"},
    {"infer"},
    {"train"},
    {"eval"},
    {"finetune", "serve", "lab", "interop", "demo"},
    {"cli"},  # with __main__, which only calls it
]
BASE_MODULES = {"__init__", "config", "errors", "verb", "runtime", "progress", "executor"}


def room_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:  # `lmforge` itself: its __init__
        return "base"
    name = parts[1]
    if name == "__main__":
        return "cli"
    return "base" if name in BASE_MODULES else name


def layer_of(room: str) -> int:
    for i, rooms in enumerate(LAYERS):
        if room in rooms:
            return i
    raise AssertionError(f"room '{room}' is not on any layer; add it to LAYERS and the docs")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every lmforge module `path` imports, anywhere in the file, relative ones resolved."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "lmforge")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lmforge":
                continue
            # `from lmforge.run import checkpoint` imports the submodule lmforge.run.checkpoint
            # (the package's __init__ runs first for any submodule, so it is no edge of its own).
            for alias in node.names:
                sub = PACKAGE.parent / (target + "." + alias.name).replace(".", "/")
                is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                found.add(f"{target}.{alias.name}" if is_module else target)
    return found


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_goes_down_the_layers():
    bad = []
    for module, targets in import_graph().items():
        here = room_of(module)
        for target in targets:
            there = room_of(target)
            if there == here:
                continue
            if layer_of(there) >= layer_of(here):
                bad.append(f"{module} imports {target} ({here} may not import {there})")
    assert not bad, "imports against the layers (docs/architecture.md):\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = import_graph()
    modules = set(graph)

    def resolve(target: str) -> str | None:
        # `from lmforge.models import X` depends on the package's __init__ module.
        return target if target in modules else None

    edges = {m: {t for t in map(resolve, ts) if t and t != m} for m, ts in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_every_kind_of_import(tmp_path):
    """Relative, function-level and TYPE_CHECKING imports are all found (the rule's own check)."""
    source = PACKAGE / "eval" / "_layer_probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..run import rundir\n"
        "if TYPE_CHECKING:\n    from lmforge.finetune.config import FinetuneConfig\n"
        "def f():\n    import lmforge.serve\n",
        encoding="utf-8",
    )
    try:
        found = imports_of(source)
    finally:
        source.unlink()
    assert {"lmforge.run.rundir", "lmforge.finetune.config", "lmforge.serve"} <= found
    assert layer_of(room_of("lmforge.finetune.config")) > layer_of(room_of("lmforge.eval.x"))
