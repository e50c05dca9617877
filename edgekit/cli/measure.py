"""`edgekit validate` and `edgekit bench`: an artifact's accuracy and latency, here or on devices."""

from __future__ import annotations

import click

from edgekit import api
from edgekit.cli.options import data_options, device_options, input_option, json_output, task_options
from edgekit.cli.places import show_at_places

LATENCY_KEYS = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")


@click.command()
@click.argument("artifact", type=click.Path())
@click.option("--reference", required=True, type=click.Path(), help="The FP32 reference ONNX.")
@click.option("--data", required=True, type=click.Path(), help="Validation data.")
@click.option("--threads", type=int)
@click.option("--limit", type=int, help="Use at most this many samples.")
@click.option("--accuracy-budget", type=float, help="Max accuracy drop in points; exit 1 when exceeded.")
@click.option("--min-agreement", type=float, help="Min top-1 agreement (0..1); exit 1 when below.")
@click.option("--min-cosine", type=float, help="Min output cosine (0..1); exit 1 when below.")
@click.option("--min-task-metric", type=float,
              help="Min task metric (mAP@0.5, mIoU, nn agreement, top-1; 0..1); exit 1 when below.")
@click.option("--min-output-cosine", type=float, help="Min cosine of every output on its own; exit 1 when below.")
@input_option
@data_options
@task_options
@device_options
@json_output
def validate(artifact, as_json, **options):
    """Accuracy of an artifact against the FP32 reference (agreement, cosine, SQNR, task metric)."""
    show_at_places(api.validate(artifact, **options), as_json, _print_validated,
                   (("samples", "top-1 agr", "cosine", "verdict"), _validate_cells))


def _print_validated(result) -> None:
    from edgekit.core.console import accuracy_rows, print_kv

    value = result.value
    where = [("where", result.outcomes[0].place.where())] if result.on_devices else []
    verdict = "FAIL: " + "; ".join(value["violations"]) if value["violations"] else "pass"
    print_kv(accuracy_rows(value["accuracy"]) + where + [("verdict", verdict)])


def _validate_cells(row: dict) -> tuple[str, ...]:
    acc = row["accuracy"]
    agr = acc.get("top1_agreement")
    return (str(acc.get("samples")), "-" if agr is None else f"{agr:.3f}", f"{acc.get('cosine_mean', 0):.4f}",
            "pass" if row["passed"] else "FAIL: " + "; ".join(row["violations"]))


@click.command()
@click.argument("artifact", type=click.Path())
@click.option("--profile", help="Device profile (threads, target options).")
@click.option("--threads", type=int, help="Inference threads (default: the profile's).")
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--min-runs", type=int, default=50, show_default=True)
@click.option("--min-seconds", type=float, default=2.0, show_default=True)
@input_option
@device_options
@json_output
def bench(artifact, as_json, **options):
    """Latency of an artifact: warm-up, then runs until both a minimum count and duration are met."""
    show_at_places(api.bench(artifact, **options), as_json, _print_benched,
                   (("p50 ms", "p90 ms", "cv", "runs", "cpu"), _bench_cells))


def _print_benched(result) -> None:
    from edgekit.core.console import print_kv, warn
    from edgekit.core.latency import cv_warning

    block, env = result.value["latency_ms"], result.value["environment"]
    rows = [(k, f"{block[k]:.3f} ms") for k in LATENCY_KEYS] + [
        ("cv", f"{block['cv']:.1%}"), ("runs", block["runs"]), ("first inference", f"{block['first_ms']:.2f} ms"),
        ("load", f"{block['load_ms']:.1f} ms"), ("peak RSS", f"{block['peak_rss_mb']} MB"),
        ("threads", block["threads"] or "runtime default"), ("where", block["where"])]
    if result.on_devices:  # what the device is
        rows += [("device", f"{env.get('model') or env['cpu']} ({env['cores']} cores, {env['arch']}), {env['os']}"),
                 ("runtimes", " ".join(f"{k} {v}" for k, v in env.get("runtimes", {}).items()))]
    if block.get("effective_precision"):
        rows.append(("effective precision", block["effective_precision"]))
    print_kv(rows)
    if w := cv_warning(block):
        warn(w)


def _bench_cells(row: dict) -> tuple[str, ...]:
    lat, env = row["latency_ms"], row["environment"]
    return (f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['cv']:.1%}", str(lat["runs"]),
            f"{env.get('cpu', '-')} x{env.get('cores', '?')}")
