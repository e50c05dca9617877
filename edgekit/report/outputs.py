"""The per-output section of report.md / report.html: each output of a multi-output model on its own line,
so a broken second output (a detector's scores, say) cannot hide behind a good first one."""

from __future__ import annotations

import html

COLUMNS = ("profile", "precision", "output", "shape", "cosine", "cosine min", "SQNR dB", "max abs err")


def output_rows(results: list[dict]) -> list[tuple[str, ...]]:
    """One row per output of every validated row, when the model has more than one output."""
    rows = []
    for r in results:
        outputs = (r.get("accuracy") or {}).get("outputs") or {}
        if len(outputs) < 2:
            continue
        for name, o in outputs.items():
            if o.get("error"):
                rows.append((r["profile"], r["precision"], name, o.get("shape", ""), o["error"], "", "", ""))
                continue
            sqnr = "exact" if o.get("sqnr_db") is None else f"{o['sqnr_db']:.1f}"
            rows.append((r["profile"], r["precision"], name, o.get("shape", ""), f"{o['cosine_mean']:.4f}",
                         f"{o['cosine_min']:.4f}", sqnr, f"{o['max_abs_err']:.4g}"))
    return rows


def outputs_markdown(results: list[dict]) -> list[str]:
    rows = output_rows(results)
    if not rows:
        return []
    return ["", "## Outputs vs FP32", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
            *["| " + " | ".join(row) + " |" for row in rows]]


def outputs_html(results: list[dict]) -> str:
    rows = output_rows(results)
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<h2>Outputs vs FP32</h2>\n<table class=\"results\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
