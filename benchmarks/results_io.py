"""What every benchmark result records, and how a docs table is rendered from it.

A result file `benchmarks/results/NAME.json` carries `command` (as run), `cpu` (`model`,
`family`, `flags`: the instruction-set flags that decide kernels), `torch`, `threads`, `created`,
plus the benchmark's own keys, and `tables`: `{table: {"columns": [[header, key, format]],
"rows": [{...}]}}`. A docs page embeds a table between `<!-- results: NAME.json#table -->` and
`<!-- /results -->`; `tests/unit/test_docs_tables.py` re-renders every such block from its JSON
and fails on any difference, so no headline number in docs/ lacks a committed result.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REQUIRED_KEYS = ("command", "cpu", "torch", "threads", "created")
# The flags that choose kernels and dtypes here (AVX2 vs AVX-512, native bf16, AMX).
KERNEL_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_tile",
)


def cpu_record() -> dict[str, Any]:
    """The CPU as /proc/cpuinfo names it: model string, vendor family/model, kernel flags."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    vendor = fields.get("vendor_id", platform.processor() or platform.machine())
    family = f"{vendor} family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
    return {
        "model": fields.get("model name", platform.processor() or platform.machine()),
        "family": family,
        "flags": [f for f in KERNEL_FLAGS if f in flags],
    }


def meta(threads: int) -> dict[str, Any]:
    import torch

    return {
        "command": "python " + shlex.join(sys.argv),
        "cpu": cpu_record(),
        "torch": torch.__version__,
        "threads": threads,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # 1/5/15-minute load when the result was written: above ~0.5 the machine was not idle
        # while it measured, and speed figures are then lower bounds.
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(path: Path, payload: dict[str, Any], threads: int) -> Path:
    """`payload` with the required keys, written atomically to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**meta(threads), **payload}, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def table(columns: list[list[str]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A table spec: `columns` are [header, row key, format spec ('' for str())]."""
    return {"columns": columns, "rows": rows}


def render(spec: dict[str, Any]) -> str:
    """The Markdown table of a spec, exactly as docs embed it."""
    columns = spec["columns"]
    lines = ["| " + " | ".join(c[0] for c in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for row in spec["rows"]:
        cells = []
        for _, key, fmt in columns:
            value = row.get(key)
            cells.append("" if value is None else format(value, fmt) if fmt else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# A block's body never holds another marker, so an empty block (a table not rendered yet) cannot
# swallow the next block up to its end marker.
BLOCK = re.compile(
    r"(<!-- results: ([\w.-]+\.json)#(\w+) -->\n)((?:(?!<!--).)*?)\n?(<!-- /results -->)", re.S
)


def refresh_docs(docs: Path) -> list[Path]:
    """Re-render every results block in `docs/*.md` from its JSON; returns the pages changed."""
    changed = []
    for page in sorted(docs.glob("*.md")):
        text = page.read_text()

        def block(m: re.Match) -> str:
            spec = json.loads((RESULTS / m.group(2)).read_text())["tables"][m.group(3)]
            return m.group(1) + render(spec) + "\n" + m.group(5)

        new = BLOCK.sub(block, text)
        if new != text:
            page.write_text(new)
            changed.append(page)
    return changed


if __name__ == "__main__":
    # `python benchmarks/results_io.py`: after a benchmark rewrote its JSON, refresh the docs.
    for page in refresh_docs(Path(__file__).resolve().parents[1] / "docs"):
        print(f"refreshed {page}")
