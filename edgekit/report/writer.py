"""report.json (schema edgekit.report/1), report.md and report.html."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

from edgekit.core.atomic import write_json, write_text
from edgekit.core.version import __version__
from edgekit.report.outputs import outputs_html, outputs_markdown
from edgekit.report.search import SEARCH_CSS, search_html, search_markdown, search_note
from edgekit.report.task import task_html, task_markdown

SCHEMA = "edgekit.report/1"
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




def table_rows(report: dict) -> list[tuple[str, ...]]:
    rows = []
    for r in report["results"]:
        lat, acc, art = r.get("latency_ms") or {}, r.get("accuracy") or {}, r.get("artifact") or {}
        rows.append((
            r["profile"], r["target"], r["precision"],
            _fmt(art.get("size_bytes") and art["size_bytes"] / 1e6, 2),
            _fmt(lat.get("p50"), 2), _fmt(lat.get("p90"), 2),
            _fmt(r.get("speedup_vs_fp32"), 2, suffix="x"),
            _accuracy_cell(acc), _fmt(acc.get("cosine_mean"), 4),
            verdict(r),
        ))
    return rows


def _accuracy_cell(acc: dict) -> str:
    """Top-1 agreement for a classifier; another task's metric by name (`map50 0.794`), never a made-up top-1."""
    tm = acc.get("task_metric") or {}
    if acc.get("top1_agreement") is None and acc.get("task") not in (None, "classify") and tm.get("value") is not None:
        return f"{tm['name']} {tm['value']:.3f}"
    return _fmt(acc.get("top1_agreement"), 3)


def verdict(result: dict) -> str:
    if result["status"] == "skipped":
        if result.get("simulated"):  # no engine here (TensorRT): only its ONNX was checked, on the CPU
            return "FAIL" if result.get("violations") else "skipped"
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
    notes = report_notes(report)
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    lines += task_markdown(report["results"])  # accuracy in the task's units: mAP, mIoU, nn agreement
    lines += outputs_markdown(report["results"])  # each output of a multi-output model on its own line
    lines += search_markdown(report["results"])  # what --accuracy-budget tried, per searched artifact
    return "\n".join(lines) + "\n"


def _notes(r: dict) -> list[str]:
    name = f"{r['profile']} {r['precision']}"
    notes = [f"{name}: {v}" for v in r.get("violations", [])]
    if r.get("error"):
        notes.append(f"{name}: {r['error']}")
    where = (r.get("latency_ms") or {}).get("where")
    if (r.get("latency_ms") or {}).get("emulated"):
        notes.append(f"{name}: latency measured on {where}: emulated, not representative (no latency budget judged)")
    elif where and where != "host":
        notes.append(f"{name}: latency measured on {where}")
    # what the runtime really computed in, when that is not the row's name (OpenVINO: bf16 on AMX CPUs)
    ran = (r.get("latency_ms") or {}).get("effective_precision")
    if ran and ran != {"fp32": "f32", "fp16": "f16"}.get(r["precision"]):
        notes.append(f"{name}: ran in {ran}")
    if searched := search_note(r):  # --accuracy-budget: the layers int8 left in float
        notes.append(f"{name}: {searched}")
    return notes


def report_notes(report: dict) -> list[str]:
    """Every row's notes, a note shared by several precisions of one profile said once."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for r in report["results"]:
        for note in _notes(r):
            text = note.split(": ", 1)[1]
            grouped.setdefault((r["profile"], text), []).append(r["precision"])
    return [f"{profile} {'/'.join(precisions)}: {text}" for (profile, text), precisions in grouped.items()]


def render_html(report: dict) -> str:
    """One self-contained page: the table, a latency distribution per row, accuracy vs latency.

    Inline SVG and CSS only: no scripts, fonts or images fetched, so it opens offline and as a CI artifact.
    """
    head = "".join(f"<th>{html.escape(c)}</th>" for c in TABLE_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td class='{_cls(c)}'>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in table_rows(report)
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report_notes(report))
    m, env = report["model"], report["environment"]
    measured = [r for r in report["results"] if (r.get("latency_ms") or {}).get("p50")]
    charts = "".join(latency_figure(r) for r in measured) or "<p>no latency measured</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgekit report: {html.escape(_model_name(m))}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1180px;padding:0 1em;color:#222}}
h1{{margin-bottom:.2em}} h2{{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}}
table{{border-collapse:collapse;font-variant-numeric:tabular-nums}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}} th{{background:#f3f5f8}}
td:nth-child(-n+3),th{{text-align:left}} .pass{{color:#1a7f37}} .FAIL,.FAILED{{color:#c00;font-weight:bold}}
.skipped{{color:#888}} small,.muted{{color:#666}}
.charts{{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:14px}}
figure{{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:8px;background:#fff}}
figcaption{{font-weight:600;font-size:14px;margin-bottom:4px}} svg text{{font-family:inherit}}
.scatter{{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}}
.key{{list-style:none;padding:0;margin:0;font-size:13px;line-height:1.6}}
{SEARCH_CSS}
</style></head><body>
<h1>edgekit report</h1>
<p><b>{html.escape(_model_name(m))}</b> · {m.get('params', 0):,} params · {m.get('macs', 0):,} MACs<br>
<small>{html.escape(report['created'])} · edgekit {html.escape(report['edgekit_version'])} ·
{html.escape(str(env.get('cpu', '')))} · {env.get('cores')} cores · Python {html.escape(str(env.get('python', '')))}</small></p>
<table class="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<ul>{notes}</ul>
{task_html(report["results"])}{outputs_html(report["results"])}{search_html(report["results"])}
<h2>Accuracy vs latency</h2>
{accuracy_latency_figure(measured)}
<h2>Latency distributions</h2>
<p class="muted">Each chart is one row's timed runs (batch 1, after warm-up): a histogram with the median (p50)
and p90 marked. A wide or two-humped shape means the machine was busy while measuring.</p>
<div class="charts">{charts}</div>
</body></html>
"""


def _model_name(model: dict) -> str:
    return Path(str(model.get("source", ""))).name or "model"


def _cls(cell: str) -> str:
    return cell if cell in ("pass", "FAIL", "FAILED", "skipped") else ""


PRECISION_COLORS = {"fp32": "#3d7fd9", "fp16": "#2a9d8f", "int8": "#e76f51"}


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round-numbered ticks inside [lo, hi]."""
    import math

    span = (hi - lo) or abs(hi) or 1.0
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _num(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"


class _Chart:
    """An SVG plot area with axes; x/y map data to pixels."""

    PAD_L, PAD_R, PAD_T, PAD_B = 48, 16, 14, 40

    def __init__(self, width: int, height: int, xlim: tuple[float, float], ylim: tuple[float, float]):
        self.w, self.h = width, height
        self.xlim, self.ylim = xlim, ylim
        self.parts: list[str] = []
        self.inner_w = width - self.PAD_L - self.PAD_R
        self.inner_h = height - self.PAD_T - self.PAD_B

    def x(self, v: float) -> float:
        lo, hi = self.xlim
        return self.PAD_L + (v - lo) / ((hi - lo) or 1) * self.inner_w

    def y(self, v: float) -> float:
        lo, hi = self.ylim
        return self.PAD_T + self.inner_h - (v - lo) / ((hi - lo) or 1) * self.inner_h

    def axes(self, x_label: str, y_label: str, y_ticks: bool = True) -> None:
        left, top, bottom = self.PAD_L, self.PAD_T, self.PAD_T + self.inner_h
        p = self.parts
        p.append(f"<rect x='{left}' y='{top}' width='{self.inner_w}' height='{self.inner_h}' fill='#fafbfc' stroke='#ccc'/>")
        for t in _ticks(*self.xlim, count=max(3, self.inner_w // 70)):
            if self.xlim[0] <= t <= self.xlim[1]:
                x = self.x(t)
                p.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{bottom}' y2='{bottom + 4}' stroke='#888'/>"
                         f"<text x='{x:.1f}' y='{bottom + 16}' font-size='11' text-anchor='middle'>{_num(t)}</text>")
        if y_ticks:
            for t in _ticks(*self.ylim, count=4):
                if self.ylim[0] <= t <= self.ylim[1]:
                    y = self.y(t)
                    p.append(f"<line x1='{left}' x2='{left + self.inner_w}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e8e8e8'/>"
                             f"<text x='{left - 5}' y='{y + 4:.1f}' font-size='11' text-anchor='end'>{_num(t)}</text>")
        mid = top + self.inner_h / 2
        p.append(f"<text x='{left + self.inner_w / 2}' y='{self.h - 6}' font-size='12' text-anchor='middle'>"
                 f"{html.escape(x_label)}</text>"
                 f"<text x='13' y='{mid}' font-size='12' text-anchor='middle' transform='rotate(-90 13 {mid})'>"
                 f"{html.escape(y_label)}</text>")

    def svg(self, label: str) -> str:
        # no xmlns: inline SVG in HTML needs none, and the page stays free of any URL
        return (f"<svg viewBox='0 0 {self.w} {self.h}' width='{self.w}' height='{self.h}' role='img' "
                f"aria-label='{html.escape(label)}'>{''.join(self.parts)}</svg>")


def latency_figure(row: dict) -> str:
    """A histogram of the row's latency samples (a box plot from percentiles when there are none)."""
    import numpy as np

    lat = row["latency_ms"]
    name = f"{row['profile']} · {row['precision']}"
    color = PRECISION_COLORS.get(row["precision"], "#666")
    samples = np.asarray(lat.get("samples") or [], dtype=float)
    if len(samples) >= 5:
        lo, p50, p90 = np.percentile(samples, [0, 50, 90])
        # preemption outliers can be 100x the median: keep the body readable, count the rest
        hi = min(float(np.percentile(samples, 99)), p50 + 6 * max(p90 - p50, 0.02 * p50))
    else:
        lo, p50, p90 = lat.get("min", lat["p50"]), lat["p50"], lat["p90"]
        hi = lat.get("p99", p90)
    pad = 0.06 * ((hi - lo) or hi or 1.0)
    xlim = (max(0.0, lo - pad), hi + pad)
    if len(samples) >= 5:
        bins = int(min(40, max(12, np.sqrt(len(samples)) * 1.5)))
        inside = samples[samples <= xlim[1]]
        counts, edges = np.histogram(inside, bins=bins, range=xlim)
        chart = _Chart(380, 190, xlim, (0, counts.max() * 1.2 or 1))
        chart.axes("latency (ms)", "runs")
        for c, a, b in zip(counts, edges[:-1], edges[1:]):
            if c:
                chart.parts.append(f"<rect x='{chart.x(a):.1f}' y='{chart.y(c):.1f}' "
                                   f"width='{max(chart.x(b) - chart.x(a) - 1, 1):.1f}' height='{chart.y(0) - chart.y(c):.1f}' "
                                   f"fill='{color}' fill-opacity='0.8'/>")
        off = int((samples > xlim[1]).sum())
        if off:
            chart.parts.append(f"<text x='{chart.x(xlim[1]) - 4:.1f}' y='{chart.PAD_T + 44}' font-size='10' "
                               f"text-anchor='end' fill='#a33'>+{off} slower, off the chart (max {lat.get('max', 0):.3g})</text>")
        shown = f"{len(samples)} of {lat.get('runs', len(samples))} runs shown"
    else:  # an older report without samples: min / p50 / p90 / p99 as a box plot
        chart = _Chart(380, 190, xlim, (0, 1))
        chart.axes("latency (ms)", "", y_ticks=False)
        y = chart.y(0.5)
        chart.parts.append(
            f"<line x1='{chart.x(lo):.1f}' x2='{chart.x(hi):.1f}' y1='{y:.1f}' y2='{y:.1f}' stroke='{color}'/>"
            f"<rect x='{chart.x(p50):.1f}' y='{y - 18:.1f}' width='{max(chart.x(p90) - chart.x(p50), 2):.1f}' "
            f"height='36' fill='{color}' fill-opacity='0.5' stroke='{color}'/>")
        shown = "percentiles only"
    for key, dash, dy in (("p50", "", 12), ("p90", " stroke-dasharray='4 3'", 26)):
        x = chart.x(lat[key])
        right = x > chart.PAD_L + 0.7 * chart.inner_w  # label on the left of the line near the right edge
        chart.parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{chart.PAD_T}' y2='{chart.PAD_T + chart.inner_h}' "
                           f"stroke='#222'{dash}/><text x='{x - 4 if right else x + 4:.1f}' y='{chart.PAD_T + dy}' "
                           f"font-size='11' text-anchor='{'end' if right else 'start'}'>{key} {lat[key]:.3g} ms</text>")
    caption = (f"{html.escape(name)}<br><small>{html.escape(str(row['target']))} · {shown} · "
               f"cv {lat.get('cv', 0):.0%}</small>")
    return (f"<figure class='latency-chart' data-row='{html.escape(name)}'><figcaption>{caption}</figcaption>"
            f"{chart.svg(f'latency distribution of {name}')}</figure>")


def _accuracy_value(row: dict) -> tuple[float | None, str]:
    acc = row.get("accuracy") or {}
    if (tm := acc.get("task_metric")) and tm.get("value") is not None:
        return tm["value"] * 100, f"{tm['name']} (%)"
    if acc.get("top1_agreement") is not None:
        return acc["top1_agreement"] * 100, "top-1 agreement with FP32 (%)"
    if acc.get("cosine_mean") is not None:
        return acc["cosine_mean"] * 100, "output cosine vs FP32 (x100)"
    return None, ""


def accuracy_latency_figure(rows: list[dict]) -> str:
    """One numbered point per profile x precision: further left is faster, higher is more accurate."""
    points = [(r, *_accuracy_value(r)) for r in rows]
    points = [(r, v, label) for r, v, label in points if v is not None]
    if not points:
        return "<p class='muted'>no accuracy measured (pass --val DATA)</p>"
    label = points[0][2]
    points = [p for p in points if p[2] == label]  # one metric per chart
    xs = [r["latency_ms"]["p50"] for r, _, _ in points]
    ys = [v for _, v, _ in points]
    spread = max(ys) - min(ys)
    chart = _Chart(640, 300, (0, max(xs) * 1.12), (min(ys) - max(1.0, spread * 0.15), max(ys) + max(0.5, spread * 0.1)))
    chart.axes("median latency (ms)", label)
    key = []
    for i, ((r, v, _), x) in enumerate(zip(points, xs), 1):
        color = PRECISION_COLORS.get(r["precision"], "#666")
        name = f"{r['profile']} {r['precision']}"
        chart.parts.append(
            f"<circle cx='{chart.x(x):.1f}' cy='{chart.y(v):.1f}' r='9' fill='{color}' fill-opacity='0.85'>"
            f"<title>{html.escape(name)}: {x:.3g} ms, {v:.2f}</title></circle>"
            f"<text x='{chart.x(x):.1f}' y='{chart.y(v) + 4:.1f}' font-size='10' font-weight='bold' fill='#fff' "
            f"text-anchor='middle'>{i}</text>")
        key.append(f"<li><span style='color:{color}'>●</span> <b>{i}</b> {html.escape(name)}: "
                   f"{x:.3g} ms, {v:.1f}</li>")
    return (f"<figure class='accuracy-latency-chart'><figcaption>{html.escape(label)} vs median latency "
            f"<small>· up and left is better</small></figcaption><div class='scatter'>"
            f"{chart.svg('accuracy versus latency')}<ol class='key'>{''.join(key)}</ol></div></figure>")


def write_reports(report: dict, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    write_json(paths["json"], report)
    write_text(paths["md"], render_markdown(report))
    write_text(paths["html"], render_html(report))
    return paths
