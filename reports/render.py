"""A report is a list of blocks; this module writes the same blocks as Markdown and as one
self-contained HTML file (images inlined as base64 ``data:`` URIs, no external resources)."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    right: tuple[int, ...] = ()  # columns to right-align (numbers)


@dataclass
class Image:
    path: Path
    alt: str


Block = Heading | Text | Bullets | Table | Image

# A plot a report wants: file-name suffix, title, draw(path) -> the written path or None when
# there is nothing to show, and the reason given then.
PlotSpec = tuple[str, str, Callable[[Path], Path | None], str]


def draw_plots(prefix: Path, specs: list[PlotSpec], images: list[Path]) -> tuple[dict[str, Image], list[str]]:
    """Draws each plot to ``<prefix>-<name>.png``. Returns the drawn ones as Image blocks by
    name, in order (their paths also appended to ``images``), and one sentence for each plot
    that had nothing to show, so a report says why a plot is missing instead of omitting it."""
    drawn: dict[str, Image] = {}
    missing = []
    for name, title, draw, why in specs:
        path = draw(Path(f"{prefix}-{name}.png"))
        if path is None:
            missing.append(f"No {title} plot: {why}.")
            continue
        images.append(path)
        drawn[name] = Image(path, title)
    return drawn, missing


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], base: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Text):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            align = ["---:" if i in b.right else "---" for i in range(len(b.headers))]
            lines = ["| " + " | ".join(map(_md_cell, b.headers)) + " |", "| " + " | ".join(align) + " |"]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.path.relative_to(base).as_posix()})")
    return "\n\n".join(out) + "\n"


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f2f2f2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; display: block; margin: 0.8em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _inline(text: str) -> str:
    """Escape, then turn Markdown `code` spans into <code> (the only inline markup used)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: list[Block], title: str) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.headers)
            body = "".join(
                "<tr>" + "".join(
                    f'<td class="num">{_inline(c)}</td>' if i in b.right else f"<td>{_inline(c)}</td>"
                    for i, c in enumerate(row)
                ) + "</tr>"
                for row in b.rows
            )  # fmt: skip
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            out.append(f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">')
    out.append("</body></html>")
    return "\n".join(out) + "\n"
