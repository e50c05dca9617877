"""The sweep's tables (one per profile, Pareto points and the recommended one marked) and sweep.html: an offline
accuracy-vs-latency chart per profile (inline SVG, no script), the front drawn as a step line."""

from __future__ import annotations

import html

SWEEP_COLUMNS = ("", "prune", "precision", "method", "size MB", "p50 ms", "metric", "drop", "build s", "result")
MARKS = {"recommended": "*", "pareto": "o"}  # the first column: * recommended (also on the front), o on the front


def settings_text(row: dict) -> str:
    method = f" ({row['calib_method']})" if row.get("calib_method") else ""
    return f"prune {row['prune_ratio']:g} {row['precision']}{method}"


def mark(row: dict) -> str:
    return MARKS["recommended"] if row.get("recommended") else MARKS["pareto"] if row.get("pareto") else ""


def table_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    """One profile's points, fastest first (failed ones last)."""
    def order(r):
        lat = (r.get("latency_ms") or {}).get("p50")
        return (lat is None, lat or 0.0, r["prune_ratio"], r["precision"])

    out = []
    for r in sorted(rows, key=order):
        metric = r.get("metric") or {}
        out.append((mark(r), f"{r['prune_ratio']:g}", r["precision"], r.get("calib_method") or "-",
                    _fmt(r.get("size_mb"), 3), _fmt((r.get("latency_ms") or {}).get("p50"), 3),
                    f"{metric['name']} {metric['value']:.3f}" if metric else "-", _fmt(metric.get("drop"), 2),
                    _fmt(r.get("build_s"), 1), _verdict(r)))
    return out


def _verdict(r: dict) -> str:
    if r["status"] != "ok":
        return "FAILED: " + (r.get("error") or "")
    return "pass" if r["passed"] else "FAIL: " + "; ".join(r["violations"])


def _fmt(v, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(c or "mark" for c in SWEEP_COLUMNS) + " |", "|" + "---|" * len(SWEEP_COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table_rows(rows)]
    return "\n".join(lines)


# ---- sweep.html ------------------------------------------------------------------------------------------

W, H, PAD = 560, 320, 48


def chart_svg(rows: list[dict]) -> str:
    """Task metric (y) against p50 latency (x) of one profile's measured points; the Pareto front joined."""
    pts = [r for r in rows if r["status"] == "ok" and r.get("latency_ms") and r.get("metric")]
    if not pts:
        return "<p>No point was measured.</p>"
    xs = [r["latency_ms"]["p50"] for r in pts]
    ys = [r["metric"]["value"] for r in pts]
    x0, x1 = _span(min(xs), max(xs))
    y0, y1 = _span(min(ys), max(ys))

    def sx(x):
        return PAD + (x - x0) / (x1 - x0) * (W - 2 * PAD)

    def sy(y):
        return H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
             f'aria-label="{html.escape(pts[0]["metric"]["name"])} against p50 latency">',
             f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#999"/>']
    for v in (x0, (x0 + x1) / 2, x1):
        parts.append(f'<text x="{sx(v):.1f}" y="{H - PAD + 16}" text-anchor="middle" font-size="11">{v:.3g}</text>')
    for v in (y0, (y0 + y1) / 2, y1):
        parts.append(f'<text x="{PAD - 6}" y="{sy(v) + 4:.1f}" text-anchor="end" font-size="11">{v:.3g}</text>')
    parts.append(f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle" font-size="12">p50 latency, ms</text>')
    parts.append(f'<text x="14" y="{H / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 {H / 2})">'
                 f'{html.escape(pts[0]["metric"]["name"])}</text>')
    front = sorted((r for r in pts if r.get("pareto")), key=lambda r: r["latency_ms"]["p50"])
    if len(front) > 1:  # a staircase: each front point is the best metric reachable at its latency
        path, prev = [], None
        for r in front:
            x, y = sx(r["latency_ms"]["p50"]), sy(r["metric"]["value"])
            path.append(f"M{x:.1f},{y:.1f}" if prev is None else f"L{x:.1f},{prev:.1f} L{x:.1f},{y:.1f}")
            prev = y
        parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for r in pts:
        x, y = sx(r["latency_ms"]["p50"]), sy(r["metric"]["value"])
        color = "#2ca02c" if r["passed"] else "#d62728"
        size = 7 if r.get("recommended") else 4.5
        ring = ' stroke="#000" stroke-width="2"' if r.get("recommended") else ""
        label = html.escape(f"{settings_text(r)}: {r['latency_ms']['p50']:.3f} ms, {r['metric']['value']:.4f}")
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size}" fill="{color}"{ring}><title>{label}</title></circle>')
        left = x > W / 2  # a label on the right half reads leftwards, so it stays inside the chart
        parts.append(f'<text x="{x - 8 if left else x + 8:.1f}" y="{y - 6:.1f}" font-size="10" '
                     f'text-anchor="{"end" if left else "start"}">{html.escape(settings_text(r))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _span(lo: float, hi: float) -> tuple[float, float]:
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 0.01
    return lo - pad, hi + pad


def render_html(doc: dict) -> str:
    sections = []
    for name, block in doc["profiles"].items():
        rows = [p for p in doc["points"] if p["profile"] == name]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in SWEEP_COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(rows))
        rec = block.get("recommended")
        verdict = (f"recommended: <b>{html.escape(rec['settings'])}</b>, {rec['p50_ms']:.3f} ms p50"
                   if rec else "no point meets every budget")
        sections.append(f"<section><h2>{html.escape(name)} ({html.escape(block['target'])})</h2><p>{verdict}</p>"
                        f"{chart_svg(rows)}<table><tr>{head}</tr>{body}</table></section>")
    legend = ("green: meets every budget; red: misses one; ringed: recommended; the blue staircase joins the Pareto "
              "front (no other point is both faster and more accurate). Table: * recommended, o on the front.")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgekit sweep: {html.escape(doc['model']['source'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-top:1em}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}section{{margin-bottom:3em}}</style></head>
<body><h1>edgekit sweep</h1><p>{html.escape(doc['model']['source'])}: {len(doc['points'])} points,
{html.escape(doc['run']['engine'])}</p><p>{legend}</p>{''.join(sections)}</body></html>
"""
