"""The per-output section of report.md / report.html: each output of a multi-output model on its own line,
so a broken second output (a detector's scores, say) cannot hide behind a good first one."""

from __future__ import annotations

from edgekit.report.tables import html_section, markdown_section

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
    return markdown_section("Outputs vs FP32", COLUMNS, output_rows(results))


def outputs_html(results: list[dict]) -> str:
    return html_section("Outputs vs FP32", COLUMNS, output_rows(results))
