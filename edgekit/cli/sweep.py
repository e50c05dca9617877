"""`edgekit sweep`: pruning x precision x calibration method x profile; a table per profile, sweep.json/.md/.html."""

from __future__ import annotations

import sys

import click

from edgekit import api
from edgekit.cli.options import data_options, given_options, input_option, json_output, show, task_options


@click.command()
@click.argument("model", required=False)
@click.option("-c", "--config", type=click.Path(), help="Project config (edgekit.toml) with a [sweep] table; options given here win.")
@click.option("--profile", "profiles", multiple=True, help="Device profile. Repeatable.")
@click.option("--prune", metavar="R1,R2,...", multiple=True,
              help="Pruning ratios (PyTorch models), e.g. 0,0.25,0.5 (default: 0).")
@click.option("--precision", "precisions", metavar="P1,P2,...", multiple=True,
              help="Precisions: fp32, fp16, int8, comma-separated (default: fp32,int8).")
@click.option("--calib-methods", metavar="M1,M2,...", multiple=True,
              help="int8 calibration methods: minmax, entropy, percentile (default: minmax).")
@click.option("--calib", type=click.Path(), help="Calibration data.")
@click.option("--val", type=click.Path(), help="Validation data (default: the calibration data).")
@click.option("--val-limit", type=int, help="Validate on at most this many samples.")
@click.option("--distill", type=click.Path(), help="Pruned points: distil on this data (default: BatchNorm re-estimation).")
@click.option("--search", is_flag=True, help="int8 that misses its accuracy budget: run the accuracy-aware search.")
@click.option("--accuracy-budget", type=float, help="Max accuracy drop in points (overrides the profiles').")
@click.option("--min-seconds", type=float, default=1.0, show_default=True, help="Benchmark duration per point.")
@click.option("--weights", type=click.Path(), help="State dict for a PyTorch factory.")
@click.option("--trust-pickle", is_flag=True)
@click.option("--ray", metavar="ADDRESS", help="Run the points on this Ray cluster (default: a local Ray for the sweep).")
@click.option("--in-process", is_flag=True, help="No Ray: build the points one after another in this process.")
@click.option("--workers", type=int, help="Points built side by side on the local Ray (default: the machine's cores).")
@click.option("--resume", type=click.Path(file_okay=False), metavar="OUT",
              help="Continue the sweep in OUT with its saved settings; finished points are kept.")
@input_option
@data_options
@task_options
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Output folder.")
@json_output
def sweep(model, as_json, **options):
    """The fastest settings that stay within budget, per profile: every pruning ratio x precision x method built
    once, validated with the task metric, benchmarked on each profile; Pareto front and recommended point.

    Points run as Ray tasks when Ray is installed (pip install 'edgekit[sweep]'), else in-process.
    """
    result = api.sweep(model, **given_options(options))
    show(result, as_json, print_sweep)
    sys.exit(result.exit_code)


def print_sweep(result) -> None:
    from edgekit.core.console import print_table
    from edgekit.report.sweep import SWEEP_COLUMNS, table_rows

    doc = result.sweep
    for name, block in doc["profiles"].items():
        rec = block["recommended"]
        title = (f"{name} ({block['target']}): recommended {rec['settings']}, {rec['p50_ms']:.3f} ms p50" if rec
                 else f"{name} ({block['target']}): no point meets every budget")
        print_table(title, SWEEP_COLUMNS, table_rows([p for p in doc["points"] if p["profile"] == name]))
    run = doc["run"]
    click.echo(f"  * recommended, o on the Pareto front. Built {run['jobs_built']} jobs ({run['jobs_resumed']} resumed) "
               f"on {run['engine']} in {run['build_wall_s']:.1f} s; benchmarks {run.get('bench_s', 0):.1f} s.")
    click.echo(f"sweep: {result.paths['html']}  ({result.paths['json'].name}, {result.paths['md'].name})")
