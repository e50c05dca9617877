"""`edgekit check`: a report against its profile budgets and a baseline, with JUnit and Markdown summaries.

Report, baseline and limits come from the arguments, else from an edgekit.toml's [deploy] output and [check].
"""

from __future__ import annotations

import os
from pathlib import Path

from edgekit.core.errors import InvalidInputError
from edgekit.pipeline.config import CheckSettings, load_config
from edgekit.report.gate import CheckResult, GateOptions, check_report, load_json_report, parse_increase

TABLE = ("profile", "precision", "metric", "baseline", "current", "delta", "result")


def check(report=None, *, config=None, baseline=None, max_accuracy_drop=None, max_latency_increase=None,
          junit=None, markdown=None) -> CheckResult:
    """The gate's verdict on REPORT; writes JUnit XML to `junit` and the Markdown summary to `markdown`
    (default: appended to $GITHUB_STEP_SUMMARY when set)."""
    from edgekit.core.console import warn
    from edgekit.report.junit import write_junit

    settings, report_path = _from_config(config, report)
    baseline_path = baseline or settings.baseline
    baseline_data = None
    if baseline_path and (baseline or Path(baseline_path).exists()):
        baseline_data = load_json_report(baseline_path, "baseline")
    elif baseline_path:  # named in the config but not recorded yet: the first run of a new project
        warn(f"baseline {baseline_path} does not exist yet: only the profile budgets are checked")
        baseline_path = None
    options = GateOptions(
        max_accuracy_drop=_first(max_accuracy_drop, settings.max_accuracy_drop, GateOptions.max_accuracy_drop),
        max_latency_increase=parse_increase(max_latency_increase) if max_latency_increase is not None
        else _first(settings.max_latency_increase, GateOptions.max_latency_increase),
    )
    result = check_report(load_json_report(report_path, "report"), baseline_data, options,
                          str(baseline_path) if baseline_path else None)
    if junit:
        write_junit(result, junit)
    summary_path = markdown or os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        _write_markdown(result, Path(summary_path), append=not markdown)
    return result


def _first(*values):
    return next(v for v in values if v is not None)


def _from_config(config_path, report) -> tuple[CheckSettings, Path]:
    if not config_path:
        if not report:
            raise InvalidInputError("no report given", hint="edgekit check out/report.json, or -c edgekit.toml")
        return CheckSettings(), Path(report)
    config = load_config(config_path)
    if report:
        return config.check, Path(report)
    if config.output is None:
        raise InvalidInputError(f"{config_path} has no [deploy] output", hint="pass the report.json path")
    return config.check, config.output / "report.json"


def check_row(c) -> tuple[str, ...]:
    """One MetricCheck as a row of the table the command prints and the Markdown summary."""
    def fmt(v):
        return "-" if v is None else f"{v:.4g}"

    verdict = {"pass": "pass", "fail": "FAIL", "warn": "warn", "skip": "skipped"}[c.verdict]
    return (c.profile, c.precision, c.metric + (f" ({c.unit})" if c.unit else ""), fmt(c.baseline), fmt(c.current),
            c.delta or "-", verdict)


def render_check_markdown(result: CheckResult) -> str:
    failed, warned = len(result.failures), sum(c.verdict == "warn" for c in result.checks)
    head = "passed" if result.passed else f"{failed} regression{'s' * (failed != 1)}"
    lines = [f"### edgekit check: {head}" + (f", {warned} warning{'s' * (warned != 1)}" if warned else ""), "",
             "| " + " | ".join(TABLE) + " |", "|" + "---|" * len(TABLE)]
    for c in result.checks:
        row = list(check_row(c))
        row[-1] = {"FAIL": "❌ FAIL", "pass": "✅ pass", "warn": "⚠️ warn"}.get(row[-1], row[-1])
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    notes = [f"- **{c.profile} {c.precision} {c.metric}**: {c.message}" for c in result.checks
             if c.verdict in ("fail", "warn")]
    notes += [f"- {w}" for w in result.warnings]
    if result.baseline_source is None:
        notes.append("- no baseline: only the profile budgets were checked")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _write_markdown(result: CheckResult, path: Path, append: bool) -> None:
    from edgekit.core.atomic import write_text

    text = render_check_markdown(result)
    if append and path.exists():  # GitHub collects every step's summary in one file
        text = path.read_text(encoding="utf-8") + "\n" + text
    write_text(path, text)
