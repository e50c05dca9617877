"""`edgekit export`, `quantize` and `compile`: a model into the files a target deploys."""

from __future__ import annotations

import sys

import click

from edgekit import api
from edgekit.cli.options import (
    const_option,
    data_options,
    device_options,
    input_option,
    json_output,
    method_option,
    show,
    task_options,
)


@click.command()
@click.argument("model")
@click.option("--weights", type=click.Path(), help="State dict (.safetensors, .pt/.pth).")
@input_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="ONNX file to write.")
@click.option("--static", is_flag=True, help="Keep the batch axis static.")
@click.option("--opset", type=int, help="ONNX opset (default: the exporter's).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a fully pickled model (runs its code).")
@json_output
def export(model, as_json, **options):
    """Export a PyTorch model (file.py:factory, pkg.module:factory, .pt2, TorchScript) to ONNX."""
    show(api.export(model, **options), as_json, _print_exported)


def _print_exported(art) -> None:
    from edgekit.core.console import print_kv

    p = art.provenance
    print_kv([("wrote", str(art.path)), ("inputs", ", ".join(f"{s.name}:{s.display_shape()}" for s in art.inputs)),
              ("outputs", ", ".join(art.outputs)), ("opset", p["opset"]),
              ("params", f"{p['params']:,}"), ("MACs", f"{p['macs']:,}"),
              ("max |ONNX - PyTorch|", f"{p['max_abs_diff_vs_torch']:.2e}")])


@click.command()
@click.argument("model", type=click.Path())
@click.option("--target", help="Target runtime (default: the profile's, else onnxruntime).")
@click.option("--profile", help="Device profile (target, options).")
@click.option("--calib", required=True, type=click.Path(), help="Calibration data (.npy, .npz, image folder).")
@click.option("--val", type=click.Path(), help="Validation data: also report accuracy vs the FP32 model.")
@click.option("--reference", type=click.Path(), help="FP32 ONNX to validate against (default: MODEL when it is ONNX).")
@method_option
@click.option("--per-tensor", is_flag=True, help="Per-tensor instead of per-channel weights.")
@click.option("--max-samples", type=int, default=300, show_default=True, help="Calibration samples used at most.")
@click.option("--precision", type=click.Choice(["int8", "fp16"]), default="int8", show_default=True,
              help="fp16: a float16 ONNX (tensorrt target; float32 kept where --calib shows fp16 overflow).")
@click.option("--exclude", "--ignore", "exclude", multiple=True,
              help="Node name, op type or glob kept in float (NNCF's ignored_scope). Repeatable.")
@click.option("--int8-io", is_flag=True, help="tflite: int8 model inputs/outputs (microcontrollers, NPU delegates).")
@click.option("--accuracy-budget", type=float, metavar="POINTS",
              help="Max accuracy drop vs FP32 (on --val, else --calib); if missed, search calibration and float layers.")
@click.option("--search-time", type=float, metavar="SECONDS",
              help="Safety net on the --accuracy-budget search's wall time (default 3600); the search ends by its steps.")
@click.option("--max-float-layers", type=int, default=16, show_default=True,
              help="Most layers the --accuracy-budget search may keep in float.")
@input_option
@data_options
@task_options
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True, help="Output folder.")
@json_output
def quantize(model, as_json, **options):
    """Int8 post-training quantization with the target's native quantizer."""
    result = api.quantize(model, **options)
    show(result, as_json, _print_quantized)
    sys.exit(result.exit_code)  # 1: budget missed, the most accurate int8 found is kept


def _print_quantized(result) -> None:
    from edgekit.core.console import accuracy_rows, print_kv
    from edgekit.onnx.mixed_range import OPTION, describe

    art = result.artifact
    rows = [("wrote", str(art.path)), ("size", f"{art.size_bytes() / 1e6:.2f} MB")]
    rows += [(k, describe(v) if k == OPTION else str(v)) for k, v in art.provenance.items()
             if k not in ("excluded_nodes", "accuracy_search")]
    if result.accuracy is not None:
        rows += accuracy_rows(result.accuracy)
    print_kv(rows)
    if result.search:
        from edgekit.stages.search import print_search

        print_search(result.search)


@click.command(name="compile")
@click.argument("model", type=click.Path())
@click.option("--target", help="Target runtime (default: the profile's, else onnxruntime).")
@click.option("--profile", help="Device profile.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True)
@click.option("--ort-format", is_flag=True, help="onnxruntime: write the .ort format.")
@input_option
@const_option
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True, help="Output folder.")
@device_options
@json_output
def compile_cmd(model, as_json, **options):
    """Compile a model into the target's deployable file."""
    show(api.compile(model, **options), as_json, _print_compiled)


def _print_compiled(result) -> None:
    from edgekit.core.console import print_kv

    art, size = result.artifact, f"{result.artifact.size_bytes() / 1e6:.2f} MB"
    p = art.provenance
    if "built_on" not in p:
        print_kv([("wrote", str(art.path)), ("format", art.format), ("precision", art.precision), ("size", size)])
        return
    print_kv([("wrote", str(art.path)), ("build log", p.get("build_log", "-")), ("built on", p["built_on"]),  # a device
              ("builder", p.get("builder", "-")), ("tensorrt", p.get("tensorrt", "-")), ("cuda", p.get("cuda", "-")),
              ("gpu", f"{p.get('gpu', '-')} (compute capability {p.get('compute_capability', '?')})"),
              ("size", size)])
