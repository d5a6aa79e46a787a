"""The built-in `pydocs` corpus: the English documentation that ships inside every CPython.

One document per public stdlib module (its module, class and function docstrings, read by parsing
the source with `ast`) plus one per `pydoc_data` topic (the language reference sections behind
`help('if')`). Nothing is imported: importing arbitrary stdlib modules has side effects
(`antigravity` opens a browser), and parsing is faster and the same on every platform.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# Top-level stdlib entries that are tests, demos, tooling or vendored code, not documentation.
_SKIP_TOP = {
    "test",
    "idlelib",
    "lib2to3",
    "turtledemo",
    "ensurepip",
    "site-packages",
    "dist-packages",
    "pydoc_data",
    "this.py",
    "antigravity.py",
    "__hello__.py",
    "__phello__",
}
_SKIP_PARTS = {"tests", "test", "__pycache__", "_vendor", "scripts"}


def stdlib_dir() -> Path:
    """The directory holding the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def module_files(root: Path | None = None, limit: int | None = None) -> list[Path]:
    """The public stdlib `.py` files, sorted, so the corpus is the same on every run."""
    root = root or stdlib_dir()
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        # Prune here rather than filter later: site-packages alone can hold 100k files.
        dirnames[:] = [d for d in dirnames if _public_dir(rel, d)]
        for name in filenames:
            if name.endswith(".py") and not (not rel and name in _SKIP_TOP):
                if not name.startswith("_") or name.startswith("__"):
                    files.append(Path(dirpath, name))
    files.sort()
    return files[:limit] if limit is not None else files


def _public_dir(parents: tuple[str, ...], name: str) -> bool:
    if not parents and (name in _SKIP_TOP or name.startswith(("config-", "plat-"))):
        return False
    return name not in _SKIP_PARTS and not name.startswith((".", "_"))


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_document(source: str, name: str) -> str:
    """Render one module's docstrings as plain text: a title, then `qualname(args)` + docstring."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    sections: list[str] = []
    doc = ast.get_docstring(tree)
    if doc:
        sections.append(f"{name}\n\n{doc}")
    for qualname, signature, doc in _definitions(tree.body, prefix=""):
        sections.append(f"{name}.{qualname}{signature}\n\n{doc}")
    return "\n\n".join(sections)


def _definitions(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, str, str]]:
    """(qualified name, signature, docstring) of public classes and functions, depth first."""
    for node in body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if node.name.startswith("_") and node.name != "__init__":
            continue
        qualname = f"{prefix}{node.name}"
        doc = ast.get_docstring(node)
        if isinstance(node, ast.ClassDef):
            if doc:
                yield qualname, "", doc
            yield from _definitions(node.body, prefix=f"{qualname}.")
        elif doc:
            yield qualname, f"({ast.unparse(node.args)})", doc


def topic_documents(root: Path | None = None) -> Iterator[tuple[str, str]]:
    """(topic, text) for each `pydoc_data` topic, read from `topics.py` as a literal."""
    path = (root or stdlib_dir()) / "pydoc_data" / "topics.py"
    if not path.is_file():
        log.warning("pydocs: %s not found; the corpus has module docstrings only", path)
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "topics" for t in node.targets
        ):
            topics = ast.literal_eval(node.value)
            for key in sorted(topics):
                yield key, topics[key]


def iter_pydocs(root: Path | None = None, limit: int | None = None) -> Iterator[tuple[str, str]]:
    """Yield (document name, text): stdlib modules (at most `limit`), then pydoc topics."""
    root = root or stdlib_dir()
    for path in module_files(root, limit):
        name = module_name(path, root)
        text = module_document(path.read_text(encoding="utf-8", errors="replace"), name)
        if text:
            yield f"pydocs:{name}", text
    if limit is None:
        for key, text in topic_documents(root):
            yield f"pydocs:topic:{key}", text


def pydocs_fingerprint(root: Path | None = None) -> str:
    """A cheap identity of the corpus: Python version plus the name, size, mtime of each file."""
    root = root or stdlib_dir()
    digest = hashlib.sha256(f"{sys.version}|{root}".encode())
    for path in [*module_files(root), root / "pydoc_data" / "topics.py"]:
        if path.exists():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
