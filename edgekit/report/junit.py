"""JUnit XML for CI systems: one testcase per profile x metric, so failures show up per metric."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from edgekit.core.atomic import atomic_path


def junit_tree(result, suite_name: str = "edgekit check") -> ET.ElementTree:
    checks = result.checks
    suite = ET.Element("testsuite", {
        "name": suite_name, "tests": str(len(checks)),
        "failures": str(sum(c.verdict == "fail" for c in checks)),
        "errors": "0", "skipped": str(sum(c.verdict == "skip" for c in checks)), "time": "0",
    })
    for c in checks:
        case = ET.SubElement(suite, "testcase", {"classname": f"edgekit.{c.profile}",
                                                 "name": f"{c.precision} {c.metric}", "time": "0"})
        text = _values(c)
        if c.verdict == "fail":
            ET.SubElement(case, "failure", {"message": c.message, "type": "regression"}).text = text
        elif c.verdict == "skip":
            ET.SubElement(case, "skipped", {"message": c.message})
        else:  # pass, and warn (which must not fail the build) with its reason
            ET.SubElement(case, "system-out").text = (f"warning: {c.message}\n" if c.verdict == "warn" else "") + text
    if result.warnings:
        ET.SubElement(suite, "system-err").text = "\n".join(f"warning: {w}" for w in result.warnings)
    root = ET.Element("testsuites", {k: suite.get(k) for k in ("name", "tests", "failures", "errors", "skipped")})
    root.append(suite)
    ET.indent(root)
    return ET.ElementTree(root)


def _values(c) -> str:
    unit = f" {c.unit}" if c.unit else ""
    base = "-" if c.baseline is None else f"{c.baseline:g}{unit}"
    cur = "-" if c.current is None else f"{c.current:g}{unit}"
    return f"baseline {base}, current {cur}" + (f", delta {c.delta}" if c.delta else "") + f": {c.message}"


def write_junit(result, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        junit_tree(result).write(tmp, encoding="utf-8", xml_declaration=True)
