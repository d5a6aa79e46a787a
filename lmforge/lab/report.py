"""`lmforge report DIR`: one page about a run or a sweep, as report.html and report.md.

A report is a list of `Part`s (`report_blocks`: a heading and its text, tables, preformatted
text, images); `report_run` and `report_sweep` build them, this module renders them. The HTML
is self-contained: images are PNGs in `data:` URIs, styles inline, no scripts, nothing fetched.
The Markdown references the same images written to `report_files/`.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError
from lmforge.lab.report_blocks import Image, Part, Pre, Table
from lmforge.lab.report_config import ReportConfig
from lmforge.verb import Flags

HTML_FILE = "report.html"
MD_FILE = "report.md"
FILES_DIR = "report_files"


def write_report(config: ReportConfig) -> tuple[Path, Path]:
    """Build and write the report of `config.dir`; returns (html path, md path)."""
    source = Path(config.dir)
    if not source.is_dir():
        raise ConfigError(f"report: {source} is not a directory; give a run dir or a sweep dir")
    if (source / "sweep.json").is_file():
        from lmforge.lab.report_sweep import sweep_parts

        title, parts = f"Sweep {source.name}", sweep_parts(source, config)
    elif (source / "config.toml").is_file():
        from lmforge.lab.report_run import run_parts

        title, parts = f"Run {source.name}", run_parts(source, config)
    else:
        raise ConfigError(
            f"report: {source} is neither a run dir (no config.toml) nor a sweep dir (no "
            "sweep.json); give the directory 'lmforge train' or 'lmforge sweep' wrote"
        )
    out = Path(config.out) if config.out else source
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / HTML_FILE, out / MD_FILE
    _write(html_path, render_html(title, parts))
    _write(md_path, render_markdown(title, parts, out / FILES_DIR))
    return html_path, md_path


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# -- rendering ------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}
img{max-width:100%;display:block;margin:.5em 0}
nav a{margin-right:1em}
"""


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def render_html(title: str, parts: list[Part]) -> str:
    """The whole page as one HTML string (images inline as data: URIs)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav>" + "".join(
            f'<a href="#{_anchor(p.title)}">{html.escape(p.title)}</a>' for p in parts
        ) + "</nav>",
    ]  # fmt: skip
    for part in parts:
        out.append(f'<h2 id="{_anchor(part.title)}">{html.escape(part.title)}</h2>')
        out += [_html_block(block) for block in part.blocks]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_block(block: Any) -> str:
    if isinstance(block, str):
        return f"<p>{html.escape(block)}</p>"
    if isinstance(block, Pre):
        return f"<pre>{html.escape(block.text)}</pre>"
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>"
            for row in block.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        alt = html.escape(block.alt, quote=True)
        return f'<img src="data:image/png;base64,{data}" alt="{alt}">'
    raise TypeError(f"unknown report block {type(block).__name__}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def render_markdown(title: str, parts: list[Part], files: Path) -> str:
    """The report as Markdown; images are written to `files` and linked relatively."""
    lines = [f"# {title}", ""]
    for part in parts:
        lines += [f"## {part.title}", ""]
        for block in part.blocks:
            lines += _md_block(block, files) + [""]
    return "\n".join(lines)


def _md_block(block: Any, files: Path) -> list[str]:
    if isinstance(block, str):
        return [block]
    if isinstance(block, Pre):
        return ["```", block.text.rstrip("\n"), "```"]
    if isinstance(block, Table):
        rows = [block.headers, ["---"] * len(block.headers)] + block.rows
        return ["| " + " | ".join(_cell(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    if isinstance(block, Image):
        files.mkdir(parents=True, exist_ok=True)
        (files / block.name).write_bytes(block.png)
        return [f"![{block.alt}]({files.name}/{block.name})"]
    raise TypeError(f"unknown report block {type(block).__name__}")


def run(config: ReportConfig, flags: Flags) -> int:
    html_path, md_path = write_report(config)
    print(f"wrote {html_path} and {md_path}")
    return 0
