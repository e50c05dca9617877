"""`edgekit check` and `edgekit baseline update`: the CI regression gate."""

from __future__ import annotations

import sys

import click

from edgekit.cli.options import handle_errors, json_option

TABLE = ("profile", "precision", "metric", "baseline", "current", "delta", "result")


@click.command()
@click.argument("report", type=click.Path(), required=False)
@click.option("-c", "--config", "config_path", type=click.Path(),
              help="edgekit.toml: report, baseline and limits come from [deploy] output and [check].")
@click.option("--baseline", type=click.Path(), help="Baseline file (from `edgekit baseline update`) or a report.json.")
@click.option("--max-accuracy-drop", type=float, help="Points an accuracy metric may fall below the baseline. [default: 0.5]")
@click.option("--max-latency-increase", metavar="PCT", help="How much slower the median may get, e.g. 10%. [default: 10%]")
@click.option("--junit", "junit_path", type=click.Path(), help="Write JUnit XML (one testcase per profile x metric).")
@click.option("--markdown", "markdown_path", type=click.Path(),
              help="Write the Markdown summary here (default: appended to $GITHUB_STEP_SUMMARY when set).")
@json_option
@handle_errors
def check(report, config_path, baseline, max_accuracy_drop, max_latency_increase, junit_path, markdown_path, as_json):
    """Check a report against its profile budgets and a baseline; exit 1 when anything regressed.

    Latency is judged with both runs' spread (a bootstrap interval of the median ratio, relative to a
    machine-speed probe timed beside every run), so a busier runner does not fail the build while a
    real slowdown does. Accuracy is deterministic: a drop is a plain difference in points.
    """
    import os
    from pathlib import Path

    from edgekit.core.console import echo_json, warn
    from edgekit.report.gate import GateOptions, check_report, load_json_report, parse_increase
    from edgekit.report.junit import write_junit

    settings, report_path = _from_config(config_path, report)
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
    data = load_json_report(report_path, "report")
    result = check_report(data, baseline_data, options, str(baseline_path) if baseline_path else None)
    if junit_path:
        write_junit(result, junit_path)
    summary_path = markdown_path or os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        _write_markdown(result, Path(summary_path), append=not markdown_path)
    if as_json:
        echo_json(result.to_dict())
    else:
        _print(result)
    if not result.passed:
        names = ", ".join(f"{c.profile} {c.precision} {c.metric}" for c in result.failures)
        click.echo(f"check failed: {names}", err=True)
        sys.exit(1)


def _first(*values):
    return next(v for v in values if v is not None)


def _from_config(config_path, report):
    from pathlib import Path

    from edgekit.core.errors import InvalidInputError
    from edgekit.pipeline.config import CheckSettings, load_config

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


def _print(result) -> None:
    from edgekit.core.console import print_table, warn

    print_table(None, TABLE, [check_row(c) for c in result.checks])
    for c in result.checks:
        if c.verdict in ("fail", "warn"):
            click.echo(f"  {c.profile} {c.precision} {c.metric}: {c.message}")
    for w in result.warnings:
        warn(w)
    if result.baseline_source is None:
        click.echo("no baseline: only the profile budgets were checked "
                   "(record one with `edgekit baseline update report.json -o baseline.json`)")


def check_row(c) -> tuple[str, ...]:
    def fmt(v):
        return "-" if v is None else f"{v:.4g}"

    verdict = {"pass": "pass", "fail": "FAIL", "warn": "warn", "skip": "skipped"}[c.verdict]
    return (c.profile, c.precision, c.metric + (f" ({c.unit})" if c.unit else ""), fmt(c.baseline), fmt(c.current),
            c.delta or "-", verdict)


def render_check_markdown(result) -> str:
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


def _write_markdown(result, path, append: bool) -> None:
    from edgekit.core.atomic import write_text

    text = render_check_markdown(result)
    if append and path.exists():  # GitHub collects every step's summary in one file
        text = path.read_text(encoding="utf-8") + "\n" + text
    write_text(path, text)


@click.group()
def baseline():
    """Baselines for `edgekit check`."""


@baseline.command(name="update")
@click.argument("report", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Baseline file to write.")
@json_option
@handle_errors
def baseline_update(report, output, as_json):
    """Record REPORT (a report.json) as the new baseline, with the environment it was measured on."""
    from edgekit.core.atomic import write_json
    from edgekit.core.console import echo_json, print_kv
    from edgekit.report.gate import load_json_report, make_baseline

    data = make_baseline(load_json_report(report, "report"), str(report))
    write_json(output, data)
    env = data["environment"]
    summary = {"wrote": str(output), "rows": len(data["results"]), "cpu": env.get("cpu"), "cores": env.get("cores"),
               "measured": data.get("created")}
    if as_json:
        echo_json(summary)
    else:
        print_kv([(k, str(v)) for k, v in summary.items()])
