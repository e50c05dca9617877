"""`edgekit prune`: structured channel pruning of a PyTorch model, with label-free recovery."""

from __future__ import annotations

import click

from edgekit import api
from edgekit.cli.options import data_options, input_option, json_output, show


@click.command(name="prune")
@click.argument("model")
@click.option("--ratio", type=float, default=0.0, show_default=True,
              help="Fraction of channels removed (per layer, or over the model with --global).")
@click.option("--criterion", type=click.Choice(["l1", "l2", "bn-scale", "taylor"]), default="l2", show_default=True,
              help="Channel importance: weight magnitude (L1/L2), BatchNorm scale, or Taylor (needs data).")
@click.option("--global", "global_ranking", is_flag=True, help="Rank channels across the whole model.")
@click.option("--ignore", multiple=True, metavar="GLOB", help="Layer names never pruned, e.g. 'stem.*'. Repeatable.")
@click.option("--round-to", type=int, help="Keep channel counts multiples of N (default: 8 with --profile).")
@click.option("--pattern", type=click.Choice(["2:4"]), help="Also make weights 2:4 sparse (TensorRT sparse kernels).")
@click.option("--calib", type=click.Path(), help="Data to re-estimate BatchNorm statistics (default: --distill data).")
@click.option("--distill", type=click.Path(), help="Unlabelled data to distill the unpruned model into the pruned one.")
@click.option("--epochs", type=int, default=0, show_default=True, help="Distillation epochs.")
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Distillation learning rate (Adam).")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--ce-weight", type=float, default=0.0, show_default=True,
              help="Add cross-entropy on labels (labelled --distill data) with this weight.")
@click.option("--max-samples", type=int, default=1024, show_default=True, help="Samples of each data source used.")
@click.option("--val", type=click.Path(), help="Data to measure agreement before/after (default: --distill/--calib).")
@click.option("--profile", help="Measure FP32 latency before/after on this profile's target.")
@click.option("--min-seconds", type=float, default=1.0, show_default=True, help="Benchmark duration per model.")
@click.option("--weights", type=click.Path(), help="State dict for a PyTorch factory.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a fully pickled model (runs its code).")
@input_option
@data_options
@click.option("-o", "--output", required=True, type=click.Path(), help="Pruned model: .pt2 (torch.export) or .onnx.")
@json_output
def prune(model, as_json, **options):
    """Remove channels from a PyTorch model (file.py:factory, module:factory, .pt2) and recover it."""
    show(api.prune(model, **options), as_json, lambda result: print_prune_report(result.report))


def print_prune_report(report: dict) -> None:
    from edgekit.core.console import print_kv, print_table, warn

    p, m = report["params"], report["macs"]
    rows = [("wrote", report["output"]),
            ("pruning", f"{report['ratio']:.0%} of channels, {report['criterion']}, {report['scope']}"
                        + (f", multiples of {report['round_to']}" if report["round_to"] else "")),
            ("params", f"{p['before']:,} -> {p['after']:,} ({p['ratio']:.1%})"),
            ("MACs", f"{m['before']:,} -> {m['after']:,} ({m['ratio']:.1%})"),
            ("kept whole", ", ".join(report["kept_whole"]) or "-")]
    if report.get("sparsity"):
        rows.append(("2:4 sparse layers", str(len(report["sparsity"]["layers"]))))
    rec = report["recovery"]
    if (bn := rec["batchnorm"]) and bn["layers"]:
        verdict = "kept" if bn["kept"] else "reverted: the original statistics matched the unpruned model better"
        rows.append(("BatchNorm re-estimated", f"{bn['layers']} layers on {bn['samples']} samples, distillation loss "
                                               f"{bn['loss_before']:.4g} -> {bn['loss_after']:.4g} ({verdict})"))
    if d := rec.get("distillation"):
        rows.append(("distillation", f"{d['epochs']} epochs on {d['samples']} samples, {d['loss']} loss "
                                     f"{d['loss_before']:.4g} -> {d['loss_trained']:.4g}"
                                     + ("" if d["kept"] else " (reverted: it matched the unpruned model worse)")))
    if acc := report.get("accuracy"):
        for stage in ("pruned", "batchnorm", "distilled"):
            if stage in acc:
                rows.append((f"vs unpruned ({stage})", _accuracy_text(acc[stage])))
    if lat := report.get("latency"):
        rows.append(("latency p50", f"{lat['before']['p50']:.3f} ms -> {lat['after']['p50']:.3f} ms "
                                    f"({lat['speedup']:.2f}x, {lat['target']} fp32, {lat['profile']})"))
    print_kv(rows)
    changed = [r for r in report["layers"] if r["before"] != r["after"]]
    print_table("channels per layer (changed)", ("layer", "before", "after"),
                [(r["name"], str(r["before"]), str(r["after"])) for r in changed])
    for w in (report.get("latency") or {}).get("warnings", []):
        warn(w)


def _accuracy_text(acc: dict) -> str:
    parts = []
    if acc.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {acc['top1_agreement']:.3f}")
    if acc.get("top1_agreement_confident") is not None:
        parts.append(f"confident {acc['top1_agreement_confident']:.3f}")
    if tm := acc.get("task_metric"):
        parts.append(f"{tm['name']} {tm['value']:.4f} (unpruned {tm['reference']:.4f})")
    parts.append(f"cosine {acc['cosine_mean']:.4f}")
    return ", ".join(parts)
