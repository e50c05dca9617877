"""The public Python API: one function per command, called and answering like it.

`edgekit.quantize("m.onnx", target="openvino", calib="data/", output="out/")` is the command
`edgekit quantize m.onnx --target openvino --calib data/ -o out/`. The model or artifact is
positional; every option is a keyword named as the command's long option (`-o` is `output`, a
repeated option takes a list: `inputs=["input:1x3x224x224"]`, `devices=[...]`, `profiles=[...]`).
Paths or objects are accepted: an Artifact for a model file, a Profile for a profile name, a data
source (edgekit.open_data) for a data path, a TensorSpec for an input spec. Each returns an
Artifact or a result whose `.to_dict()` is what the command prints with `--json`; errors are the
command's (edgekit.EdgekitError and its subclasses, each with the command's exit code).

Heavy libraries load inside the calls, so `import edgekit` needs no optional runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgekit.core.artifact import Artifact
    from edgekit.pipeline.compile import ArtifactResult
    from edgekit.pipeline.deploy import DeployResult
    from edgekit.pipeline.measure import BenchResult, ValidateResult
    from edgekit.pipeline.prune import PruneReport
    from edgekit.pipeline.quantize import QuantizeResult
    from edgekit.pipeline.sweep import SweepResult
    from edgekit.report.gate import CheckResult

def _check_paths(model, options: dict, data_options: tuple[str, ...]) -> None:
    """The named files exist: answered before any heavy import (edgekit.core.paths)."""
    from edgekit.core.paths import check_data_path, check_model_path

    check_model_path(model)
    for name in data_options:
        if options.get(name) is not None:
            check_data_path(options[name], "--" + name)


__all__ = ["bench", "check", "compile", "deploy", "emulate", "emulate_status", "emulate_stop", "export", "prune",
           "quantize", "sweep", "validate"]


def export(model, *, output, inputs=(), weights=None, static=False, opset=None, no_simplify=False,
           trust_pickle=False) -> Artifact:
    """`edgekit export`: a PyTorch model (file.py:factory, pkg.module:factory, .pt2, TorchScript, or a
    torch.nn.Module itself) to ONNX at `output`, outputs compared with PyTorch."""
    _check_paths(model, {}, ())
    from edgekit.core.torch_model import load_torch_model
    from edgekit.pipeline.arguments import as_specs
    from edgekit.stages.export import ExportOptions, export_onnx

    if isinstance(model, (str, Path)):
        net, name = load_torch_model(str(model), weights, trust_pickle), str(model)
    else:  # a live module
        net, name = model, type(model).__name__
    options = ExportOptions(inputs=as_specs(inputs), dynamic_batch=not static, opset=opset, simplify=not no_simplify)
    return export_onnx(net, Path(output), options, source_name=name)


def prune(model, **options) -> PruneReport:
    """`edgekit prune`: remove channels from a PyTorch model and recover it; options as PruneRequest
    (ratio, criterion, global_ranking, ignore, round_to, pattern, calib, distill, epochs, lr, batch_size,
    ce_weight, max_samples, val, profile, min_seconds, weights, trust_pickle, inputs, preprocess, labels, output)."""
    from edgekit.pipeline.arguments import keyword_options
    from edgekit.pipeline.prune import PruneRequest
    from edgekit.pipeline.prune import prune as run

    return run(model, keyword_options(PruneRequest, "prune", options))


def quantize(model, **options) -> QuantizeResult:
    """`edgekit quantize`: int8 with the target's native quantizer; options as QuantizeRequest (target,
    profile, calib, val, reference, method, per_tensor, max_samples, precision, exclude, int8_io,
    accuracy_budget, search_time, max_float_layers, inputs, preprocess, labels, task, masks, output).
    `.exit_code` is 1 when an accuracy budget was missed (the most accurate int8 found is kept)."""
    _check_paths(model, options, ("calib", "val", "reference"))
    from edgekit.pipeline.arguments import keyword_options
    from edgekit.pipeline.quantize import QuantizeRequest
    from edgekit.pipeline.quantize import quantize as run

    return run(model, keyword_options(QuantizeRequest, "quantize", options))


def compile(model, **options) -> ArtifactResult:
    """`edgekit compile`: the target's deployable file; options as CompileRequest (target, profile,
    precision, ort_format, inputs, output, and devices/devices_file/accept_new_host_key/device_timeout
    to build a TensorRT engine on the device)."""
    _check_paths(model, options, ())
    from edgekit.pipeline.arguments import keyword_options
    from edgekit.pipeline.compile import CompileRequest, compile_model

    return compile_model(model, keyword_options(CompileRequest, "compile", options))


def validate(artifact, **options) -> ValidateResult:
    """`edgekit validate`: accuracy against the FP32 reference; options as ValidateRequest (reference, data,
    threads, limit, accuracy_budget, min_agreement, min_cosine, min_task_metric, min_output_cosine, inputs,
    preprocess, labels, task, masks, and the device options). `task`: classify | detect | segment | embed | generic | pkg.mod:fn (default: guessed).
    `.exit_code` is 1 when a budget was missed."""
    _check_paths(artifact, options, ("reference", "data"))
    from edgekit.pipeline.arguments import keyword_options
    from edgekit.pipeline.measure import ValidateRequest
    from edgekit.pipeline.measure import validate as run

    return run(artifact, keyword_options(ValidateRequest, "validate", options))


def bench(artifact, **options) -> BenchResult:
    """`edgekit bench`: latency percentiles; options as BenchRequest (profile, threads, warmup, min_runs,
    min_seconds, inputs, and the device options)."""
    _check_paths(artifact, options, ())
    from edgekit.pipeline.arguments import keyword_options
    from edgekit.pipeline.measure import BenchRequest
    from edgekit.pipeline.measure import bench as run

    return run(artifact, keyword_options(BenchRequest, "bench", options))


def deploy(model=None, **options) -> DeployResult:
    """`edgekit deploy`: the whole chain for one or more profiles, written to `output` with
    report.json/.md/.html; options as DeployRequest (config, profiles, calib, val, precisions,
    accuracy_budget, search_time, method, weights, trust_pickle, min_seconds, prune, require_engine,
    inputs, preprocess, labels, task, masks, output, and the device options). With `config` (an edgekit.toml),
    the options given here win over the file's. `.exit_code` is the command's."""
    _check_paths(model, options, ("calib", "val"))
    from edgekit.pipeline.arguments import keyword_options
    from edgekit.pipeline.deploy_request import DeployRequest, deploy_request

    return deploy_request(model, keyword_options(DeployRequest, "deploy", options), set(options))


def sweep(model=None, **options) -> SweepResult:
    """`edgekit sweep`: every pruning ratio x precision x calibration method built once, validated and benchmarked
    on each profile; the Pareto front and the recommended point (lowest latency within every budget) per profile,
    in `output`/sweep.json/.md/.html. Options as SweepRequest (profiles, prune, precisions, calib_methods, calib,
    val, val_limit, distill, search, accuracy_budget, min_seconds, weights, trust_pickle, ray, in_process, workers,
    resume, inputs, preprocess, labels, consts, task, masks, output); axes take lists or "a,b" strings.
    Points run as Ray tasks when Ray is installed (`edgekit[sweep]`), else in-process. `.exit_code` is the command's."""
    _check_paths(model, options, ("calib", "val", "distill"))
    from edgekit.pipeline.arguments import keyword_options
    from edgekit.pipeline.sweep import SweepRequest
    from edgekit.pipeline.sweep import sweep as run

    return run(model, keyword_options(SweepRequest, "sweep", options), set(options))


def emulate(arch: str = "aarch64", **options):
    """`edgekit device emulate ARCH`: build (once, cached) and start the emulated aarch64 device (qemu 10, needs
    root); options runtimes, cpu, port. Returns the running EmulatedDevice (its `.url`); `emulate_status()` and
    `emulate_stop()` are `--status` and `--stop`."""
    from edgekit.remote.emulated import emulate as start

    return start(arch, **options)


def emulate_status():
    """`edgekit device emulate --status`: the running emulated device, or None."""
    from edgekit.remote.emulated import emulated_status

    return emulated_status()


def emulate_stop():
    """`edgekit device emulate --stop`: end the emulated device's processes by their PIDs."""
    from edgekit.remote.emulated import stop_emulated

    return stop_emulated()


def check(report=None, *, config=None, baseline=None, max_accuracy_drop=None, max_latency_increase=None,
          junit=None, markdown=None) -> CheckResult:
    """`edgekit check`: a report.json against its profile budgets and a baseline; `.passed` is False when
    anything regressed. Writes JUnit XML to `junit`, the Markdown summary to `markdown` (default: appended
    to $GITHUB_STEP_SUMMARY when set)."""
    from edgekit.pipeline.check import check as run

    return run(report, config=config, baseline=baseline, max_accuracy_drop=max_accuracy_drop,
               max_latency_increase=max_latency_increase, junit=junit, markdown=markdown)
