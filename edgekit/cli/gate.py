"""`edgekit check` and `edgekit baseline update`: the CI regression gate."""

from __future__ import annotations

import sys

import click

from edgekit import api
from edgekit.cli.options import json_output, show


@click.command()
@click.argument("report", type=click.Path(), required=False)
@click.option("-c", "--config", type=click.Path(),
              help="edgekit.toml: report, baseline and limits come from [deploy] output and [check].")
@click.option("--baseline", type=click.Path(), help="Baseline file (from `edgekit baseline update`) or a report.json.")
@click.option("--max-accuracy-drop", type=float, help="Points an accuracy metric may fall below the baseline. [default: 0.5]")
@click.option("--max-latency-increase", metavar="PCT", help="How much slower the median may get, e.g. 10%. [default: 10%]")
@click.option("--junit", type=click.Path(), help="Write JUnit XML (one testcase per profile x metric).")
@click.option("--markdown", type=click.Path(),
              help="Write the Markdown summary here (default: appended to $GITHUB_STEP_SUMMARY when set).")
@json_output
def check(report, as_json, **options):
    """Check a report against its profile budgets and a baseline; exit 1 when anything regressed.

    Latency is judged with both runs' spread (a bootstrap interval of the median ratio, relative to a
    machine-speed probe timed beside every run), so a busier runner does not fail the build while a
    real slowdown does. Accuracy is deterministic: a drop is a plain difference in points.
    """
    result = api.check(report, **options)
    show(result, as_json, _print)
    if not result.passed:
        names = ", ".join(f"{c.profile} {c.precision} {c.metric}" for c in result.failures)
        click.echo(f"check failed: {names}", err=True)
        sys.exit(1)


def _print(result) -> None:
    from edgekit.core.console import print_table, warn
    from edgekit.pipeline.check import TABLE, check_row

    print_table(None, TABLE, [check_row(c) for c in result.checks])
    for c in result.checks:
        if c.verdict in ("fail", "warn"):
            click.echo(f"  {c.profile} {c.precision} {c.metric}: {c.message}")
    for w in result.warnings:
        warn(w)
    if result.baseline_source is None:
        click.echo("no baseline: only the profile budgets were checked "
                   "(record one with `edgekit baseline update report.json -o baseline.json`)")


@click.group()
def baseline():
    """Baselines for `edgekit check`."""


@baseline.command(name="update")
@click.argument("report", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Baseline file to write.")
@json_output
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
