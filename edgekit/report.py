"""report.json (schema edgekit.report/1), report.md and report.html."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

from . import __version__
from .atomic import write_json, write_text

SCHEMA = "edgekit.report/1"
MAX_SAMPLES = 300  # latency samples kept per row in report.json
TABLE_COLUMNS = ("profile", "target", "precision", "size MB", "p50 ms", "p90 ms", "speedup", "top-1 agr", "cosine", "result")


def build_report(model: dict, environment: dict, results: list[dict]) -> dict:
    return {
        "schema": SCHEMA,
        "edgekit_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "environment": environment,
        "results": results,
    }


def compact_samples(samples: list[float], limit: int = MAX_SAMPLES) -> list[float]:
    """At most `limit` latency samples (ms), evenly spaced in run order so drift stays visible."""
    if len(samples) > limit:
        step = len(samples) / limit
        samples = [samples[int(i * step)] for i in range(limit)]
    return [round(float(s), 4) for s in samples]


def table_rows(report: dict) -> list[tuple[str, ...]]:
    rows = []
    for r in report["results"]:
        lat, acc, art = r.get("latency_ms") or {}, r.get("accuracy") or {}, r.get("artifact") or {}
        rows.append((
            r["profile"], r["target"], r["precision"],
            _fmt(art.get("size_bytes") and art["size_bytes"] / 1e6, 2),
            _fmt(lat.get("p50"), 2), _fmt(lat.get("p90"), 2),
            _fmt(r.get("speedup_vs_fp32"), 2, suffix="x"),
            _fmt(acc.get("top1_agreement"), 3), _fmt(acc.get("cosine_mean"), 4),
            verdict(r),
        ))
    return rows


def verdict(result: dict) -> str:
    if result["status"] == "skipped":
        return "skipped"
    if result["status"] == "failed":
        return "FAILED"
    return "pass" if result.get("passed") else "FAIL"


def _fmt(value, digits: int, suffix: str = "") -> str:
    if value is None or value == "":
        return "-"
    return f"{value:.{digits}f}{suffix}"


def render_markdown(report: dict) -> str:
    m = report["model"]
    lines = [
        f"# edgekit report: {Path(m.get('source', '')).name}",
        "",
        f"{report['created']} · edgekit {report['edgekit_version']} · {report['environment'].get('cpu', '')}",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(report)]
    notes = [n for r in report["results"] for n in _notes(r)]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def _notes(r: dict) -> list[str]:
    name = f"{r['profile']} {r['precision']}"
    notes = [f"{name}: {v}" for v in r.get("violations", [])]
    if r.get("error"):
        notes.append(f"{name}: {r['error']}")
    where = (r.get("latency_ms") or {}).get("where")
    if where and where != "host":
        notes.append(f"{name}: latency measured on {where}")
    return notes


def render_html(report: dict) -> str:
    """One self-contained page: no scripts, no network, an inline SVG chart."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in TABLE_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td class='{_cls(c)}'>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in table_rows(report)
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for r in report["results"] for n in _notes(r))
    m, env = report["model"], report["environment"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgekit report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:nth-child(-n+3),th{{text-align:left}} .pass{{color:#1a7f37}} .FAIL,.FAILED{{color:#c00;font-weight:bold}}
.skipped{{color:#888}} small{{color:#666}}
</style></head><body>
<h1>edgekit report</h1>
<p><b>{html.escape(Path(m.get('source', '')).name)}</b> · {m.get('params', 0):,} params · {m.get('macs', 0):,} MACs<br>
<small>{html.escape(report['created'])} · edgekit {html.escape(report['edgekit_version'])} ·
{html.escape(str(env.get('cpu', '')))} · {env.get('cores')} cores · Python {html.escape(str(env.get('python', '')))}</small></p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<ul>{notes}</ul>
<h2>Latency (p50, ms)</h2>
{latency_svg(report)}
</body></html>
"""


def _cls(cell: str) -> str:
    return cell if cell in ("pass", "FAIL", "FAILED", "skipped") else ""


def latency_svg(report: dict) -> str:
    rows = [r for r in report["results"] if (r.get("latency_ms") or {}).get("p50")]
    if not rows:
        return "<p>no latency measured</p>"
    top = max(r["latency_ms"]["p90"] for r in rows) or 1.0
    bar_h, label_w, width = 22, 260, 420
    parts = []
    for i, r in enumerate(rows):
        lat = r["latency_ms"]
        y = i * (bar_h + 6)
        w50, w90 = width * lat["p50"] / top, width * lat["p90"] / top
        label = html.escape(f"{r['profile']} {r['precision']}")
        parts.append(
            f"<text x='0' y='{y + 16}' font-size='13'>{label}</text>"
            f"<rect x='{label_w}' y='{y}' width='{w90:.1f}' height='{bar_h}' fill='#cfe2ff'/>"
            f"<rect x='{label_w}' y='{y}' width='{w50:.1f}' height='{bar_h}' fill='#3d7fd9'/>"
            f"<text x='{label_w + w90 + 6:.1f}' y='{y + 16}' font-size='12'>{lat['p50']:.2f} / {lat['p90']:.2f}</text>"
        )
    height = len(rows) * (bar_h + 6)
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_w + width + 120}' height='{height}' "
            f"role='img' aria-label='latency chart'>{''.join(parts)}</svg>"
            "<p><small>dark: p50, light: p90</small></p>")


def write_reports(report: dict, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    write_json(paths["json"], report)
    write_text(paths["md"], render_markdown(report))
    write_text(paths["html"], render_html(report))
    return paths
