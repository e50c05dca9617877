"""The --accuracy-budget search in deploy's reports: report.md, report.html and the console say which
layers stayed in float and list every step the search tried, from a real deploy of the planted model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_accuracy_aware import BUDGET, planted, planted_node  # noqa: F401  (planted: the fixture)
from test_report import Page

from edgekit.report.search import search_markdown, searched_sections
from edgekit.report.writer import render_html, render_markdown, report_notes


@pytest.fixture(scope="module")
def deployed(planted, tiny_data, tmp_path_factory):  # noqa: F811
    """One deploy of the planted model to ONNX Runtime, fp32 and int8, with an accuracy budget."""
    from edgekit.cli.main import main

    out = tmp_path_factory.mktemp("searched")
    args = ["deploy", str(planted), "--profile", "x86-onnxruntime-cpu", "--calib", str(tiny_data),
            "--precision", "fp32", "--precision", "int8", "--accuracy-budget", BUDGET, "--min-seconds", "0.1",
            "-o", str(out)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    rows = {r["precision"]: r for r in report["results"]}
    return result.output, report, rows, out


def test_report_md_names_the_float_layers_and_lists_the_steps(deployed, planted):  # noqa: F811
    _, _, rows, out = deployed
    record = rows["int8"]["artifact"]["provenance"]["accuracy_search"]
    node = planted_node(planted)
    assert record["searched"] and record["met"] and node in record["float_layers"]
    md = (out / "report.md").read_text()
    # the row's note: its float layers, counted and named, and the verdict
    lines = md.splitlines()
    note = next(line for line in lines if line.startswith("- x86-onnxruntime-cpu int8: int8 accuracy search"))
    assert f"{len(record['float_layers'])} float layers kept: " in note and node in note and "budget met" in note
    assert not any("accuracy search" in line for line in lines if line.startswith("- x86-onnxruntime-cpu fp32"))
    section = md[md.index("## Accuracy search: x86-onnxruntime-cpu int8"):]
    assert section.count("## Accuracy search") == 1  # fp32 was not searched
    table = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    steps = [s for s in record["steps"] if s.get("ranking") is None]
    header, step_lines = table[0], table[1:1 + len(steps)]
    assert "float layers" in header and "drop (points)" in header and "p50 ms" in header
    for line, step in zip(step_lines, steps):  # every step the search tried, in order, with its numbers
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert step["step"] in cells[0] and cells[1] == str(len(step["float_layers"]))
        if step.get("failed"):
            assert cells[-1].startswith("failed: ")
        else:
            assert cells[-1] == ("met" if step["met"] else "missed")
        if step.get("latency_p50_ms") is not None:
            assert cells[5] == f"{step['latency_p50_ms']:.3f}" and cells[2] == f"{step['accuracy_drop']:.2f}"
    chosen = [line for line in step_lines if "(chosen)" in line]
    assert len(chosen) == 1 and record["steps"][record["chosen_step"]]["step"] in chosen[0]
    assert step_lines[0].split("|")[1].strip() == "default int8" and "missed" in step_lines[0]
    # the sensitivity ranking behind the float layers, worst first: the planted layer leads
    ranking = section[section.index("Most sensitive layers"):]
    first = next(line for line in ranking.splitlines() if line.startswith("| 1 |"))
    assert node in first


def test_report_html_has_the_search_section(deployed, planted):  # noqa: F811
    _, _, rows, out = deployed
    record = rows["int8"]["artifact"]["provenance"]["accuracy_search"]
    page_text = (out / "report.html").read_text()
    page = Page()
    page.feed(page_text)
    text = "".join(page.text)
    assert "Accuracy search: x86-onnxruntime-cpu int8" in text
    assert planted_node(planted) in text and "float layers kept" in text
    shown = [s for s in record["steps"] if s.get("ranking") is None]
    assert len(page.find("tr", inside="search")) == len(shown) + 1  # + the header row
    assert len(page.find("tr", cls="chosen", inside="search")) == 1
    ranking = next(s["ranking"] for s in record["steps"] if s.get("ranking") is not None)
    assert len(page.find("tr", inside="ranking")) == min(5, len(ranking)) + 1
    for step in shown:
        assert step["step"] in text
    assert page_text.index("Accuracy search") < page_text.index("Accuracy vs latency")  # under the table's notes


def test_console_marks_the_row_with_float_layers(deployed, planted):  # noqa: F811
    output, _, rows, _ = deployed
    kept = rows["int8"]["artifact"]["provenance"]["accuracy_search"]["float_layers"]
    line = next(line for line in output.splitlines() if "int8 accuracy search" in line)
    assert line.strip().startswith("x86-onnxruntime-cpu int8:") and f"{len(kept)} float layers kept" in line
    assert planted_node(planted) in output


def test_a_budget_met_without_search_adds_no_note_and_no_section(deployed):
    _, report, _, _ = deployed
    quiet = copy.deepcopy(report)
    record = quiet["results"][1]["artifact"]["provenance"]["accuracy_search"]
    record.update(searched=False, met=True, float_layers=[], chosen_step=0, steps=record["steps"][:1],
                  message="budget met by the default int8; no search")
    assert not any("accuracy search" in n for n in report_notes(quiet))
    assert "## Accuracy search" not in render_markdown(quiet) and "Accuracy search" not in render_html(quiet)


def test_rows_sharing_one_artifact_share_one_section_and_names_are_escaped(deployed):
    _, report, _, _ = deployed
    twin = copy.deepcopy(report)
    int8 = next(r for r in twin["results"] if r["precision"] == "int8")
    other = {**copy.deepcopy(int8), "profile": "second-profile"}
    twin["results"].append(other)
    record = int8["artifact"]["provenance"]["accuracy_search"]
    record["float_layers"] = ["a|b", "<conv>"]
    record["steps"].append({"step": "2 layer(s) in float", "float_layers": ["a|b", "<conv>"], "met": False,
                            "failed": True, "violations": ["--exclude a|b matches no op"]})
    sections = searched_sections(twin["results"])
    assert len(sections) == 1 and sections[0][0].startswith("x86-onnxruntime-cpu int8, second-profile int8")
    md = "\n".join(search_markdown(twin["results"]))
    assert "a\\|b" in md and "failed: --exclude a\\|b matches no op" in md
    page = render_html(twin)
    assert "&lt;conv&gt;" in page and "<conv>" not in page


def test_report_json_keeps_the_search_record(deployed):
    _, _, rows, out = deployed
    assert "accuracy_search" not in (rows["fp32"]["artifact"]["provenance"])
    record = rows["int8"]["artifact"]["provenance"]["accuracy_search"]
    assert all(not k.startswith("_") for s in record["steps"] for k in s)  # no artifacts or options leak in
    assert Path(out / rows["int8"]["artifact"]["path"]).exists()
