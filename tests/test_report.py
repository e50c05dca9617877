"""report.json / report.md / report.html from a real deploy of the tiny CNN, checked without a browser."""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgekit.core.latency import MAX_SAMPLES, compact_samples
from edgekit.pipeline.deploy import DeployOptions, deploy
from edgekit.report.writer import TABLE_COLUMNS, render_html, render_markdown
from edgekit.stages.bench import BenchOptions


@pytest.fixture(scope="module")
def deployed(tiny_onnx, tiny_data, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("report")
    opts = DeployOptions(profiles=("x86-onnxruntime-cpu",), out_dir=out, calib=str(tiny_data), val=str(tiny_data),
                         bench=BenchOptions(warmup=3, min_seconds=0.2, min_runs=20))
    result = deploy(str(tiny_onnx), opts)
    return result.report, out


class Page(HTMLParser):
    """Every element with its attributes and the classes of the elements it sits in."""

    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict, tuple[str, ...]]] = []
        self.stack: list[tuple[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs, tuple(c for _, c in self.stack)))
        if tag not in ("meta", "br", "rect", "line", "circle", "input", "img", "link"):
            self.stack.append((tag, attrs.get("class", "")))

    def handle_startendtag(self, tag, attrs):  # <rect .../>: no children, nothing to close
        self.elements.append((tag, dict(attrs), tuple(c for _, c in self.stack)))

    def handle_endtag(self, tag):
        if tag not in (t for t, _ in self.stack):
            return
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag, cls=None, inside=None):
        return [(a, parents) for t, a, parents in self.elements
                if t == tag and (cls is None or cls in a.get("class", "").split())
                and (inside is None or inside in parents)]


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def test_html_has_the_table_and_a_chart_per_row(deployed):
    report, out = deployed
    text = (out / "report.html").read_text()
    page = parse(text)
    rows = report["results"]
    assert len(rows) == 2 and all(r["latency_ms"] for r in rows)
    headers = [d for d in page.text if d in TABLE_COLUMNS]
    assert headers[: len(TABLE_COLUMNS)] == list(TABLE_COLUMNS)
    assert len(page.find("tr", inside="results")) == 1 + len(rows)
    charts = page.find("figure", "latency-chart")
    assert [a["data-row"] for a, _ in charts] == [f"{r['profile']} · {r['precision']}" for r in rows]
    for a, _ in charts:  # each holds a real histogram: bars drawn from the samples, p50/p90 marked
        assert "latency distribution of " + a["data-row"] in text
    bars = [a for a, parents in page.find("rect") if "latency-chart" in parents and a.get("fill-opacity")]
    assert len(bars) >= 2 * 3
    assert "p50 " in text and "p90 " in text
    scatter = page.find("figure", "accuracy-latency-chart")
    assert len(scatter) == 1
    assert len([a for a, parents in page.find("circle") if "accuracy-latency-chart" in parents]) == len(rows)


def test_html_is_self_contained(deployed):
    _, out = deployed
    text = (out / "report.html").read_text()
    lowered = text.lower()
    assert "http://" not in lowered and "https://" not in lowered and "url(" not in lowered
    page = parse(text)
    assert not page.find("script") and not page.find("link") and not page.find("img") and not page.find("iframe")
    assert all("src" not in a for _, a, _ in page.elements)
    assert len(page.find("svg")) == 3  # two distributions + accuracy vs latency, all inline


def test_report_json_keeps_its_schema_and_a_compact_sample(deployed):
    report, out = deployed
    data = json.loads((out / "report.json").read_text())
    assert data == json.loads(json.dumps(report))
    assert data["schema"] == "edgekit.report/1"
    assert {"schema", "edgekit_version", "created", "model", "environment", "results"} <= set(data)
    for r in data["results"]:
        assert {"profile", "target", "precision", "status", "error", "artifact", "latency_ms", "speedup_vs_fp32",
                "accuracy", "violations", "passed"} <= set(r)
        lat = r["latency_ms"]
        assert {"p50", "p90", "p95", "p99", "mean", "std", "min", "max", "cv", "runs", "warmup", "first_ms",
                "threads", "where"} <= set(lat)
        assert 20 <= len(lat["samples"]) <= min(lat["runs"], MAX_SAMPLES)
        assert len(lat["probe_samples"]) == len(lat["samples"]) and min(lat["probe_samples"]) > 0
        assert lat["min"] <= min(lat["samples"]) and max(lat["samples"]) <= lat["max"]


def test_compact_samples_keeps_run_order_and_spread():
    samples = [float(i) for i in range(1000)]
    kept = compact_samples(samples, 300)
    assert len(kept) == 300 and kept == sorted(kept) and kept[0] == 0.0 and kept[-1] >= 996
    assert compact_samples([1.23456789, 2.0]) == [1.2346, 2.0]


def test_markdown_is_the_same_table(deployed):
    report, out = deployed
    md = (out / "report.md").read_text()
    assert md == render_markdown(report)
    lines = md.splitlines()
    header = "| " + " | ".join(TABLE_COLUMNS) + " |"
    assert header in lines
    body = lines[lines.index(header) + 2:]
    assert [line.split(" | ")[2] for line in body[: len(report["results"])]] == ["fp32", "int8"]


def test_old_report_without_samples_still_gets_a_chart_per_row(deployed):
    report, _ = deployed
    old = copy.deepcopy(report)
    for r in old["results"]:
        del r["latency_ms"]["samples"], r["latency_ms"]["probe_samples"]
    text = render_html(old)
    page = parse(text)
    assert len(page.find("figure", "latency-chart")) == len(old["results"])
    assert text.count("percentiles only") == len(old["results"])


def test_rows_without_latency_are_in_the_table_but_get_no_chart(deployed):
    report, _ = deployed
    partial = copy.deepcopy(report)
    partial["results"][1].update(status="failed", error="conversion failed at node X", latency_ms=None,
                                 accuracy=None, passed=False)
    page = parse(render_html(partial))
    assert len(page.find("tr", inside="results")) == 3
    assert len(page.find("figure", "latency-chart")) == 1
    assert any("conversion failed at node X" in t for t in page.text)
