"""The --accuracy-budget search in the reports: which layers stayed in float and what was tried.

edgekit.stages.search.search records the search in the int8 artifact's provenance["accuracy_search"];
deploy copies that provenance into each report row. Here it becomes a note per row (the console
table and report.md/.html list the notes) and one "Accuracy search" section per searched artifact:
every step with its float layers, accuracy and latency, and the sensitivity ranking behind them.
"""

from __future__ import annotations

import html

STEP_COLUMNS = ("step", "float layers", "drop (points)", "confident top-1 agr", "cosine", "p50 ms", "seconds",
                "budget")
RANKING_COLUMNS = ("#", "layer", "op", "SQNR lost dB", "worst channel SQNR dB")
RANKING_SHOWN = 5


def search_record(row: dict) -> dict | None:
    """The row's accuracy search record, when its int8 artifact went through one."""
    record = ((row.get("artifact") or {}).get("provenance") or {}).get("accuracy_search")
    return record if isinstance(record, dict) and "steps" in record else None


def search_note(row: dict) -> str | None:
    """One line for the row's notes: the layers kept in float (or none) and the search's verdict; nothing
    when the default int8 met the budget (every int8 row under a budget would say so otherwise)."""
    record = search_record(row)
    if record is None or not record.get("searched"):
        return None
    kept = record.get("float_layers") or []
    count = f"{len(kept)} " if kept else ""
    # not "; ": TFLite op names contain semicolons
    return f"int8 accuracy search: {count}float layers kept: {_kept(record)} · {_verdict(record)}"


def searched_sections(results: list[dict]) -> list[tuple[str, dict]]:
    """(title, record) per searched artifact; rows sharing one artifact (several profiles) share a section."""
    sections: dict[tuple, tuple[list[str], dict]] = {}
    for r in results:
        record = search_record(r)
        if record is None or not record.get("searched"):
            continue
        art = r.get("artifact") or {}
        key = (art.get("path"), art.get("sha256"))
        sections.setdefault(key, ([], record))[0].append(f"{r['profile']} {r['precision']}")
    return [(", ".join(names) + f" ({key[0]})" if key[0] else ", ".join(names), record)
            for key, (names, record) in sections.items()]


def step_rows(record: dict) -> list[tuple[str, ...]]:
    """The steps that built a model, as table cells; the chosen one is marked."""
    rows = []
    for i, s in enumerate(record["steps"]):
        if s.get("ranking") is not None:  # the ranking is its own table
            continue
        chosen = i == record.get("chosen_step")
        rows.append((
            ("▶ " if chosen else "") + s["step"] + (" (chosen)" if chosen else ""),
            str(len(s.get("float_layers") or [])),
            _fmt(s.get("accuracy_drop"), 2), _fmt(s.get("top1_agreement_confident"), 3),
            _fmt(s.get("cosine_mean"), 4), _fmt(s.get("latency_p50_ms"), 3), _fmt(s.get("seconds"), 1),
            _outcome(s),
        ))
    return rows


def ranking_rows(record: dict, limit: int = RANKING_SHOWN) -> list[tuple[str, ...]]:
    """The most sensitive layers the float fallback was ranked by, worst first."""
    ranking = next((s["ranking"] for s in record["steps"] if s.get("ranking")), [])
    return [(str(i), str(r.get("name", "")), str(r.get("op", "")), _fmt(r.get("sqnr_lost_db"), 1),
             _fmt(r.get("channel_sqnr_db"), 1)) for i, r in enumerate(ranking[:limit], 1)]


def _outcome(step: dict) -> str:
    if step.get("failed"):
        return "failed: " + "; ".join(step.get("violations") or [])
    if step.get("skipped"):
        return "skipped"
    return "met" if step.get("met") else "missed"  # by how much: the drop and agreement columns


def _fmt(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _verdict(record: dict) -> str:
    """The search's message without its own copy of the float layers, which are listed beside it."""
    return str(record.get("message", "")).split(" (float layers: ")[0]


def _kept(record: dict) -> str:
    kept = record.get("float_layers") or []
    return ", ".join(kept) if kept else "none"


# ---- report.md -------------------------------------------------------------------------------

def search_markdown(results: list[dict]) -> list[str]:
    """report.md lines: an "Accuracy search" section per searched artifact (none when nothing was searched)."""
    lines: list[str] = []
    for title, record in searched_sections(results):
        lines += ["", f"## Accuracy search: {_md(title)}", "",
                  _md(_verdict(record)), "",
                  f"Float layers kept: {_md(_kept(record))}", "",
                  _md_table(STEP_COLUMNS, step_rows(record))]
        ranked = ranking_rows(record)
        if ranked:
            lines += ["", "Most sensitive layers (int8 vs FP32 activations):", "", _md_table(RANKING_COLUMNS, ranked)]
    return lines


def _md_table(columns, rows) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ---- report.html -----------------------------------------------------------------------------

SEARCH_CSS = ".search td:first-child{white-space:normal} .search td:last-child{text-align:left;white-space:normal}" \
             " .search .chosen{background:#eef6ee;font-weight:600}"


def search_html(results: list[dict]) -> str:
    """report.html: an "Accuracy search" section per searched artifact ("" when nothing was searched)."""
    parts = []
    for title, record in searched_sections(results):
        chosen = record.get("chosen_step")
        body = []
        visible = [i for i, s in enumerate(record["steps"]) if s.get("ranking") is None]
        for i, row in zip(visible, step_rows(record)):
            cls = " class='chosen'" if i == chosen else ""
            body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        parts.append(
            f"<h2>Accuracy search: {html.escape(title)}</h2>"
            f"<p>{html.escape(_verdict(record))}<br>Float layers kept: "
            f"<code>{html.escape(_kept(record))}</code></p>"
            f"<table class='search'><thead><tr>{_th(STEP_COLUMNS)}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        ranked = ranking_rows(record)
        if ranked:
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in ranked)
            parts.append("<p class='muted'>Most sensitive layers (int8 vs FP32 activations), worst first:</p>"
                         f"<table class='ranking'><thead><tr>{_th(RANKING_COLUMNS)}</tr></thead>"
                         f"<tbody>{cells}</tbody></table>")
    return "\n".join(parts)


def _th(columns) -> str:
    return "".join(f"<th>{html.escape(c)}</th>" for c in columns)
