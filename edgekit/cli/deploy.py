"""`edgekit deploy` and `edgekit demo`: the whole chain, a table of its rows, report.json/.md/.html."""

from __future__ import annotations

import sys

import click

from edgekit import api
from edgekit.cli.options import (
    data_options,
    device_options,
    given_options,
    input_option,
    json_output,
    method_option,
    show,
    task_options,
)


@click.command()
@click.argument("model", required=False)
@click.option("-c", "--config", type=click.Path(), help="Project config (edgekit.toml); options given here override it.")
@click.option("--profile", "profiles", multiple=True, help="Device profile. Repeatable.")
@click.option("--calib", type=click.Path(), help="Calibration data.")
@click.option("--val", type=click.Path(), help="Validation data (default: the calibration data).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="Precisions to build (default: fp32 and the profile's).")
@click.option("--accuracy-budget", type=float,
              help="Max accuracy drop in points (overrides the profile); int8 that misses it is searched for one that meets it.")
@click.option("--search-time", type=float, metavar="SECONDS",
              help="Safety net on each int8 artifact's --accuracy-budget search (default 3600 s); it ends by its steps.")
@method_option
@click.option("--weights", type=click.Path(), help="State dict for a PyTorch factory.")
@click.option("--trust-pickle", is_flag=True)
@click.option("--min-seconds", type=float, default=2.0, show_default=True, help="Benchmark duration per row.")
@click.option("--prune", type=float, metavar="RATIO",
              help="Prune this fraction of channels (PyTorch models) before export; BatchNorm re-estimated on --calib.")
@click.option("--require-engine", is_flag=True,
              help="tensorrt: exit 3 when no engine can be built here, instead of checking its ONNX on the CPU.")
@input_option
@data_options
@task_options
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Output folder.")
@device_options
@json_output
def deploy(model, as_json, **options):
    """The whole chain for one or more profiles; writes artifacts and report.json/.md/.html.

    MODEL and --profile may come from a project config instead: `edgekit deploy -c edgekit.toml`.
    """
    result = api.deploy(model, **given_options(options))  # only what was typed: the rest may come from -c
    show(result, as_json, print_report)
    sys.exit(result.exit_code)


@click.command()
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default="edgekit-demo", show_default=True)
@click.option("--min-seconds", type=float, default=2.0, show_default=True, help="Benchmark duration per row.")
@json_output
def demo(out_dir, min_seconds, as_json):
    """Deploy the built-in example (ImageNet EfficientNet-Lite0, shipped photos) to every profile."""
    from pathlib import Path

    from edgekit.pipeline.demo import run_demo

    result = run_demo(Path(out_dir), min_seconds=min_seconds)
    show(result, as_json, print_report)
    sys.exit(result.exit_code)


def print_report(result) -> None:
    """The rows as a table, the report's notes, where the report is."""
    from edgekit.core.console import print_table
    from edgekit.report.writer import TABLE_COLUMNS, report_notes, table_rows

    print_table(None, TABLE_COLUMNS, table_rows(result.report))
    for note in report_notes(result.report):
        click.echo(f"  {note}")
    click.echo(f"report: {result.paths['html']}  ({result.paths['json'].name}, {result.paths['md'].name})")
