"""The `edgekit` command. Each command parses options, calls one library function, prints."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgekit.cli.options import (
    CONTEXT,
    data_options,
    device_options,
    handle_errors,
    input_option,
    json_option,
    load_profile_option,
    merge_inputs,
    parse_inputs,
    parse_preprocess_text,
)
from edgekit.core.version import __version__


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="edgekit")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or notes.")
@click.pass_context
def main(ctx, debug, quiet):
    """Take a trained model to edge devices: export, quantize, compile, validate, benchmark, gate CI."""
    from edgekit.core.progress import set_quiet

    ctx.obj = {"debug": debug, "quiet": quiet}
    set_quiet(quiet)


@main.command()
@click.argument("model")
@click.option("--weights", type=click.Path(), help="State dict (.safetensors, .pt/.pth).")
@input_option
@click.option("-o", "--output", type=click.Path(), required=True, help="ONNX file to write.")
@click.option("--static", is_flag=True, help="Keep the batch axis static.")
@click.option("--opset", type=int, help="ONNX opset (default: the exporter's).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a fully pickled model (runs its code).")
@json_option
@handle_errors
def export(model, weights, inputs, output, static, opset, no_simplify, trust_pickle, as_json):
    """Export a PyTorch model (file.py:factory, pkg.module:factory, .pt2, TorchScript) to ONNX."""
    from edgekit.core.console import echo_json, print_kv
    from edgekit.core.torch_model import load_torch_model
    from edgekit.stages.export import ExportOptions, export_onnx

    net = load_torch_model(model, weights, trust_pickle)
    opts = ExportOptions(inputs=parse_inputs(inputs), dynamic_batch=not static, opset=opset, simplify=not no_simplify)
    art = export_onnx(net, Path(output), opts, source_name=model)
    if as_json:
        echo_json(art.to_dict())
    else:
        p = art.provenance
        print_kv([("wrote", str(art.path)), ("inputs", ", ".join(f"{s.name}:{s.display_shape()}" for s in art.inputs)),
                  ("outputs", ", ".join(art.outputs)), ("opset", p["opset"]),
                  ("params", f"{p['params']:,}"), ("MACs", f"{p['macs']:,}"),
                  ("max |ONNX - PyTorch|", f"{p['max_abs_diff_vs_torch']:.2e}")])


@main.command()
@click.argument("model", type=click.Path())
@click.option("--target", help="Target runtime (default: the profile's, else onnxruntime).")
@click.option("--profile", help="Device profile (target, options).")
@click.option("--calib", required=True, type=click.Path(), help="Calibration data (.npy, .npz, image folder).")
@click.option("--val", type=click.Path(), help="Validation data: also report accuracy vs the FP32 model.")
@click.option("--reference", type=click.Path(), help="FP32 ONNX to validate against (default: MODEL when it is ONNX).")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True)
@click.option("--per-tensor", is_flag=True, help="Per-tensor instead of per-channel weights.")
@click.option("--max-samples", type=int, default=300, show_default=True, help="Calibration samples used at most.")
@click.option("--precision", type=click.Choice(["int8", "fp16"]), default="int8", show_default=True,
              help="fp16: a float16 ONNX (tensorrt target; float32 kept where --calib shows fp16 overflow).")
@click.option("--exclude", "--ignore", "exclude", multiple=True,
              help="Node name, op type or glob kept in float (NNCF's ignored_scope). Repeatable.")
@click.option("--int8-io", is_flag=True, help="tflite: int8 model inputs/outputs (microcontrollers, NPU delegates).")
@click.option("--accuracy-budget", type=float, metavar="POINTS",
              help="Max accuracy drop vs FP32 (on --val, else --calib); if missed, search calibration and float layers.")
@click.option("--search-time", type=float, default=240.0, show_default=True, metavar="SECONDS",
              help="Time bound of the --accuracy-budget search.")
@click.option("--max-float-layers", type=int, default=16, show_default=True,
              help="Most layers the --accuracy-budget search may keep in float.")
@input_option
@data_options
@click.option("-o", "--output", "out_dir", type=click.Path(), required=True, help="Output folder.")
@json_option
@handle_errors
def quantize(model, target, profile, calib, val, reference, method, per_tensor, max_samples, exclude, inputs, preprocess,
             labels, out_dir, as_json, precision="int8", int8_io=False, accuracy_budget=None, search_time=240.0,
             max_float_layers=16):
    """Int8 post-training quantization with the target's native quantizer."""
    from edgekit.backends.base import QuantOptions
    from edgekit.backends.registry import get_backend
    from edgekit.core.console import accuracy_rows, echo_json, print_kv
    from edgekit.core.data import open_data
    from edgekit.stages.validate import validate_artifact

    prof = load_profile_option(profile)
    backend = get_backend(target or (prof.runtime.target if prof else "onnxruntime"))
    # tensorrt makes its Q/DQ ONNX on any CPU; only engines need TensorRT and a GPU
    getattr(backend, "check_quantize_available", backend.check_available)()
    reference = reference or (model if Path(model).suffix == ".onnx" else None)
    if (val or accuracy_budget is not None) and reference is None:  # checked before any work or file
        from edgekit.core.errors import InvalidInputError

        flag = "--val" if val else "--accuracy-budget"
        raise InvalidInputError(f"{flag} needs an FP32 ONNX reference for a non-ONNX model",
                                hint="pass --reference model.onnx (edgekit export writes one)")
    source = _load_source(model, parse_inputs(inputs), Path(out_dir))
    specs = merge_inputs(source.inputs, parse_inputs(inputs))
    data = open_data(calib, specs, parse_preprocess_text(preprocess), labels)
    opts = QuantOptions(method=method, per_channel=not per_tensor, max_samples=max_samples, exclude=tuple(exclude),
                        extra={**(prof.runtime.options if prof else {}), **({"int8_io": True} if int8_io else {})})
    if precision == "fp16":
        if not hasattr(backend, "fp16_onnx"):
            from edgekit.core.errors import InvalidInputError

            raise InvalidInputError(f"--precision fp16 is a tensorrt step, not {backend.name}",
                                    hint=f"edgekit compile MODEL --target {backend.name} --precision fp16")
        art = backend.fp16_onnx(source, Path(out_dir), data)
    elif accuracy_budget is not None or _profile_budgets(prof, source):  # searched until it meets the budget
        from edgekit.stages.search.search import quantize_with_budget, search_options

        check = open_data(val or calib, specs, parse_preprocess_text(preprocess), labels)
        if accuracy_budget is None:
            accuracy_budget = prof.budgets.max_accuracy_drop
        search = search_options(accuracy_budget, prof.budgets.min_top1_agreement if prof else None, search_time,
                                max_float_layers, prof.budgets.min_cosine if prof else None)
        ref_art = _load_source(reference, (), Path(out_dir)) if reference else None
        art = quantize_with_budget(backend, source, data, check, opts, Path(out_dir), search, prof, ref_art).artifact
    else:
        art = backend.quantize(source, data, opts, Path(out_dir))
    result = {"artifact": art.to_dict(), "path": str(art.path), "size_bytes": art.size_bytes()}
    if val:
        result["accuracy"] = validate_artifact(art, reference, open_data(val, specs, parse_preprocess_text(preprocess), labels))
    searched = art.provenance.get("accuracy_search")
    if as_json:
        echo_json(result)
    else:
        rows = [("wrote", str(art.path)), ("size", f"{art.size_bytes() / 1e6:.2f} MB")]
        rows += [(k, str(v)) for k, v in art.provenance.items() if k not in ("excluded_nodes", "accuracy_search")]
        if "accuracy" in result:
            rows += accuracy_rows(result["accuracy"])
        print_kv(rows)
        if searched:
            from edgekit.stages.search.search import print_search

            print_search(searched)
    if searched and not searched["met"]:
        sys.exit(1)  # budget missed: the most accurate int8 found is kept


def _profile_budgets(prof, source) -> bool:
    """The profile's accuracy budgets apply to int8 quantized from an FP32 ONNX (the reference they are measured on)."""
    return (prof is not None and source.format == "onnx" and source.precision == "fp32"
            and any(v is not None for v in (prof.budgets.max_accuracy_drop, prof.budgets.min_top1_agreement,
                                            prof.budgets.min_cosine)))


@main.command(name="compile")
@click.argument("model", type=click.Path())
@click.option("--target", help="Target runtime (default: the profile's, else onnxruntime).")
@click.option("--profile", help="Device profile.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True)
@click.option("--ort-format", is_flag=True, help="onnxruntime: write the .ort format.")
@input_option
@click.option("-o", "--output", "out_dir", type=click.Path(), required=True, help="Output folder.")
@device_options
@json_option
@handle_errors
def compile_cmd(model, target, profile, precision, ort_format, inputs, out_dir, as_json, device):
    """Compile a model into the target's deployable file."""
    from edgekit.backends.base import CompileOptions
    from edgekit.backends.registry import get_backend
    from edgekit.core.console import echo_json, print_kv

    prof = load_profile_option(profile)
    if device.given:  # built on the device with its own TensorRT (edgekit.cli.device)
        from edgekit.cli.device import compile_on_devices

        return compile_on_devices(model, target or (prof.runtime.target if prof else "onnxruntime"), precision,
                                  parse_inputs(inputs), Path(out_dir), device, dict(prof.runtime.options) if prof else {},
                                  as_json)
    backend = get_backend(target or (prof.runtime.target if prof else "onnxruntime"))
    backend.check_available()
    source = _load_source(model, parse_inputs(inputs), Path(out_dir))
    extra = dict(prof.runtime.options) if prof else {}
    if ort_format:
        extra["ort_format"] = True
    art = backend.compile(source, prof, Path(out_dir), CompileOptions(precision, parse_inputs(inputs), extra))
    if as_json:
        echo_json({"artifact": art.to_dict(), "path": str(art.path), "size_bytes": art.size_bytes()})
    else:
        print_kv([("wrote", str(art.path)), ("format", art.format), ("precision", art.precision),
                  ("size", f"{art.size_bytes() / 1e6:.2f} MB")])


@main.command()
@click.argument("artifact", type=click.Path())
@click.option("--reference", required=True, type=click.Path(), help="The FP32 reference ONNX.")
@click.option("--data", required=True, type=click.Path(), help="Validation data.")
@click.option("--threads", type=int)
@click.option("--limit", type=int, help="Use at most this many samples.")
@click.option("--accuracy-budget", type=float, help="Max accuracy drop in points; exit 1 when exceeded.")
@click.option("--min-agreement", type=float, help="Min top-1 agreement (0..1); exit 1 when below.")
@input_option
@data_options
@device_options
@json_option
@handle_errors
def validate(artifact, reference, data, threads, limit, accuracy_budget, min_agreement, inputs, preprocess, labels,
             as_json, device):
    """Accuracy of an artifact against the FP32 reference (agreement, cosine, SQNR, task metric)."""
    from edgekit.core.artifact import Artifact
    from edgekit.core.console import accuracy_rows, echo_json, print_kv
    from edgekit.core.data import open_data
    from edgekit.stages.budgets import accuracy_violations
    from edgekit.stages.validate import validate_artifact

    art = Artifact.load(artifact)
    ref = Artifact.load(reference)
    specs = merge_inputs(ref.inputs, parse_inputs(inputs))
    source = open_data(data, specs, parse_preprocess_text(preprocess), labels, limit)
    if device.given:  # the artifact runs on the device(s), the FP32 reference here (edgekit.cli.device)
        from edgekit.cli.device import validate_on_devices

        return validate_on_devices(art, reference, source, threads, device, min_agreement, accuracy_budget, as_json)
    acc = validate_artifact(art, reference, source, threads)
    violations = accuracy_violations(acc, min_agreement, accuracy_budget)
    if as_json:
        echo_json({"accuracy": acc, "violations": violations, "passed": not violations})
    else:
        print_kv(accuracy_rows(acc) + [("verdict", "FAIL: " + "; ".join(violations) if violations else "pass")])
    if violations:
        sys.exit(1)


@main.command()
@click.argument("artifact", type=click.Path())
@click.option("--profile", help="Device profile (threads, target options).")
@click.option("--threads", type=int, help="Inference threads (default: the profile's).")
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--min-runs", type=int, default=50, show_default=True)
@click.option("--min-seconds", type=float, default=2.0, show_default=True)
@input_option
@device_options
@json_option
@handle_errors
def bench(artifact, profile, threads, warmup, min_runs, min_seconds, inputs, as_json, device):
    """Latency of an artifact: warm-up, then runs until both a minimum count and duration are met."""
    from edgekit.core.artifact import Artifact
    from edgekit.core.console import echo_json, print_kv, warn
    from edgekit.core.hostinfo import environment
    from edgekit.core.latency import cv_warning
    from edgekit.core.tensors import random_feed
    from edgekit.stages.bench import BenchOptions, bench_artifact

    prof = load_profile_option(profile)
    art = Artifact.load(artifact)
    threads = threads or (prof.threads() if prof else None)
    opts = BenchOptions(warmup=warmup, min_runs=min_runs, min_seconds=min_seconds)
    feed = random_feed(list(merge_inputs(art.inputs, parse_inputs(inputs)))) if art.inputs else None
    if device.given:  # measured on the device(s) over SSH (edgekit.cli.device)
        from edgekit.cli.device import bench_on_devices

        return bench_on_devices(art, device, threads, opts, feed, as_json, prof)
    block = bench_artifact(art, threads, opts, prof, feed)
    block["where"] = prof.where() if prof else "host"
    if as_json:
        echo_json({"latency_ms": block, "environment": environment()})
        return
    keys = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")
    print_kv([(k, f"{block[k]:.3f} ms") for k in keys] + [
        ("cv", f"{block['cv']:.1%}"), ("runs", block["runs"]), ("first inference", f"{block['first_ms']:.2f} ms"),
        ("load", f"{block['load_ms']:.1f} ms"), ("peak RSS", f"{block['peak_rss_mb']} MB"),
        ("threads", block["threads"] or "runtime default"), ("where", block["where"]),
    ] + ([("effective precision", block["effective_precision"])] if block.get("effective_precision") else []))
    if w := cv_warning(block):
        warn(w)


@main.command()
@click.argument("model", required=False)
@click.option("-c", "--config", "config_path", type=click.Path(),
              help="Project config (edgekit.toml); options given here override it.")
@click.option("--profile", "profiles", multiple=True, help="Device profile. Repeatable.")
@click.option("--calib", type=click.Path(), help="Calibration data.")
@click.option("--val", type=click.Path(), help="Validation data (default: the calibration data).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="Precisions to build (default: fp32 and the profile's).")
@click.option("--accuracy-budget", type=float,
              help="Max accuracy drop in points (overrides the profile); int8 that misses it is searched for one that meets it.")
@click.option("--search-time", type=float, metavar="SECONDS",
              help="Time bound of the --accuracy-budget search per int8 artifact (default 240).")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True)
@click.option("--weights", type=click.Path(), help="State dict for a PyTorch factory.")
@click.option("--trust-pickle", is_flag=True)
@click.option("--min-seconds", type=float, default=2.0, show_default=True, help="Benchmark duration per row.")
@click.option("--prune", "prune_ratio", type=float, metavar="RATIO",
              help="Prune this fraction of channels (PyTorch models) before export; BatchNorm re-estimated on --calib.")
@click.option("--require-engine", is_flag=True,
              help="tensorrt: exit 3 when no engine can be built here, instead of checking its ONNX on the CPU.")
@input_option
@data_options
@click.option("-o", "--output", "out_dir", type=click.Path(), help="Output folder.")
@device_options
@json_option
@handle_errors
def deploy(model, profiles, calib, val, precisions, accuracy_budget, method, weights, trust_pickle, min_seconds,
           prune_ratio, inputs, preprocess, labels, out_dir, as_json, config_path=None, device=None,
           require_engine=False, search_time=None):
    """The whole chain for one or more profiles; writes artifacts and report.json/.md/.html.

    MODEL and --profile may come from a project config instead: `edgekit deploy -c edgekit.toml`.
    """
    from edgekit.backends.base import QuantOptions
    from edgekit.pipeline.deploy import DeployOptions
    from edgekit.pipeline.deploy import deploy as run_deploy
    from edgekit.stages.bench import BenchOptions

    opts = DeployOptions(
        profiles=tuple(profiles), out_dir=Path(out_dir) if out_dir else None, calib=calib, val=val, preprocess=parse_preprocess_text(preprocess),
        labels=labels, inputs=parse_inputs(inputs), weights=weights, trust_pickle=trust_pickle,
        precisions=tuple(precisions), accuracy_budget=accuracy_budget, quant=QuantOptions(method=method),
        bench=BenchOptions(min_seconds=min_seconds), prune=prune_ratio,
        devices=device.fleet() if device and device.given else None, require_engine=require_engine,
        accuracy_search_s=search_time,
    )
    model, opts = _with_config(config_path, model, opts)
    result = run_deploy(model, opts)
    _print_report(result, as_json)
    sys.exit(result.exit_code)


def _with_config(config_path, model, opts):
    from edgekit.pipeline.config import explicit_params, load_config, merge_deploy_options

    config = load_config(config_path) if config_path else None
    return merge_deploy_options(config, model, opts, explicit_params(click.get_current_context()))


@main.command()
@click.option("-o", "--output", "out_dir", type=click.Path(), default="edgekit-demo", show_default=True)
@click.option("--min-seconds", type=float, default=2.0, show_default=True, help="Benchmark duration per row.")
@json_option
@handle_errors
def demo(out_dir, min_seconds, as_json):
    """Deploy the built-in example (ImageNet EfficientNet-Lite0, shipped photos) to every profile."""
    from edgekit.pipeline.demo import run_demo

    result = run_demo(Path(out_dir), min_seconds=min_seconds)
    _print_report(result, as_json)
    sys.exit(result.exit_code)


def _print_report(result, as_json: bool) -> None:
    from edgekit.core.console import echo_json, print_table
    from edgekit.report.writer import TABLE_COLUMNS, report_notes, table_rows

    if as_json:
        echo_json(result.report)
        return
    print_table(None, TABLE_COLUMNS, table_rows(result.report))
    for note in report_notes(result.report):
        click.echo(f"  {note}")
    click.echo(f"report: {result.paths['html']}  ({result.paths['json'].name}, {result.paths['md'].name})")




def _load_source(model: str, specs, out_dir: Path):
    """MODEL as an Artifact; a PyTorch factory (file.py:fn, pkg.module:fn) is first saved as OUT/model.pt2."""
    from edgekit.core.artifact import Artifact
    from edgekit.core.torch_model import is_pytorch_spec

    if not is_pytorch_spec(model) or Path(model).suffix == ".pt2":
        return Artifact.load(model)
    from edgekit.core.errors import InvalidInputError
    from edgekit.core.torch_model import load_torch_model
    from edgekit.stages.export import save_pt2

    if not specs:
        raise InvalidInputError("a PyTorch model needs its inputs", hint="--input input:1x3x224x224")
    return save_pt2(load_torch_model(model), out_dir / "model.pt2", specs)




# Commands that live in their own modules ("module:attribute"), added to the group here so each
# feature keeps its CLI beside its code. Importing them must need no optional runtime.
EXTRA_COMMANDS: list[str] = [
    "edgekit.cli.info:profiles", "edgekit.cli.info:doctor", "edgekit.cli.prune:prune",
    "edgekit.cli.gate:check", "edgekit.cli.gate:baseline", "edgekit.cli.device:device",
    "edgekit.cli.inspect:inspect_quant",
]


def _register_extra_commands() -> None:
    import importlib

    for ref in EXTRA_COMMANDS:
        module, attr = ref.split(":")
        main.add_command(getattr(importlib.import_module(module), attr))


_register_extra_commands()

if __name__ == "__main__":
    main()
