"""A titled table of text cells, as report.md lines or as report.html, for the report's sections."""

from __future__ import annotations

import html


def markdown_section(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return []
    return ["", f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *["| " + " | ".join(row) + " |" for row in rows]]


def html_section(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (f"<h2>{html.escape(title)}</h2>\n<table class=\"results\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>\n")
