"""`edgekit inspect-quant`: per-layer int8 error against the FP32 reference, worst layer first."""

from __future__ import annotations

import click

from edgekit.cli.options import data_options, input_option, json_output


@click.command(name="inspect-quant")
@click.argument("artifact", type=click.Path())
@click.option("--reference", required=True, type=click.Path(), help="The FP32 reference ONNX (for a .tflite: its float .tflite).")
@click.option("--data", required=True, type=click.Path(), help="Data to run both models on (.npy, .npz, images).")
@click.option("--limit", type=int, default=32, show_default=True, help="Samples used at most.")
@click.option("--top", type=int, default=20, show_default=True, help="Rows printed (all with --json).")
@input_option
@data_options
@json_output
def inspect_quant(artifact, reference, data, limit, top, as_json, **read):
    """Per-layer table of int8 vs FP32 activations (SQNR, cosine, max error), the layer that breaks first.

    Layers are ranked by the SQNR (mean over channels) they lose against their inputs, so the
    layer that introduces the error comes before the layers that only inherit it.
    """
    from pathlib import Path

    from edgekit.core.arrays import parse_consts
    from edgekit.core.artifact import Artifact
    from edgekit.core.console import echo_json, print_table
    from edgekit.core.data import open_data
    from edgekit.pipeline.arguments import as_preprocess, as_specs, merge_inputs
    from edgekit.stages.inspect import inspect_artifact

    art = Artifact.load(artifact)
    ref = Artifact.load(reference)
    specs = merge_inputs(ref.inputs, as_specs(read["inputs"]))
    source = open_data(data, specs, as_preprocess(read["preprocess"]), read["labels"], limit,
                       parse_consts(read["consts"]))
    rows = inspect_artifact(art, Path(reference), source, limit)
    if as_json:
        echo_json({"artifact": str(art.path), "reference": str(reference), "samples": min(limit, len(source)),
                   "layers": [r.to_dict() for r in rows]})
        return
    print_table(f"int8 vs FP32 per layer, worst first ({min(limit, len(source))} samples)",
                ("#", "op", "name", "SQNR lost dB", "channel SQNR dB", "SQNR dB", "cosine", "max |err|"),
                [(str(i + 1), r.op, r.name, f"{r.sqnr_lost_db:.2f}", f"{r.channel_sqnr_db:.2f}", f"{r.sqnr_db:.2f}",
                  f"{r.cosine:.5f}", f"{r.max_abs_err:.4g}") for i, r in enumerate(rows[:top])])
    if rows and rows[0].sqnr_lost_db > 0:
        click.echo(f"to keep the worst layer's output in float: --exclude {' --exclude '.join(rows[0].float_nodes)}")
