"""The whole chain for one or more profiles: reference -> artifacts -> validate -> bench -> report.

Rows are measured at each place (edgekit.remote.place): this host, or every device of --device.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from edgekit.backends.registry import load_profile
from edgekit.core.artifact import Artifact, file_sha256
from edgekit.core.atomic import atomic_path
from edgekit.core.errors import InvalidInputError, TargetUnavailableError
from edgekit.core.hostinfo import environment
from edgekit.core.onnx_model import describe_onnx, external_data_files
from edgekit.core.profiles import Profile
from edgekit.core.tempdirs import temp_files_in
from edgekit.pipeline.arguments import as_data, as_output_folder, resolve_inputs
from edgekit.pipeline.deploy_builds import DeployBuilds
from edgekit.pipeline.deploy_rows import profile_rows, row_precisions
from edgekit.pipeline.deploy_run import DeployOptions, DeployRun
from edgekit.report.writer import build_report, write_reports
from edgekit.stages.normalize import normalized_source
from edgekit.stages.task_choice import TaskChoice, load_task
from edgekit.stages.validate import reference_outputs

__all__ = ["DeployOptions", "DeployResult", "deploy", "exit_code_for", "prepare_reference"]


@dataclass
class DeployResult:
    report: dict
    paths: dict
    exit_code: int

    def to_dict(self) -> dict:
        """report.json, as `edgekit deploy --json` prints it."""
        return self.report


def deploy(model_spec: str, options: DeployOptions) -> DeployResult:
    """Its temporary files (and every library's) inside the output folder (core/tempdirs.py)."""
    with temp_files_in(as_output_folder(options.out_dir)):
        return _deploy(model_spec, options)


def _deploy(model_spec: str, options: DeployOptions) -> DeployResult:
    load_task(options.task)  # an unknown task or a callable that does not import: exit 2 before any work
    if options.prune:
        from edgekit.stages.prune.run import reject_onnx

        reject_onnx(model_spec)  # before any work: pruning needs the PyTorch model
    out_dir = as_output_folder(options.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    profiles = [p if isinstance(p, Profile) else load_profile(p) for p in options.profiles]  # fail before any work
    reference = prepare_reference(model_spec, options, out_dir)
    inputs = resolve_inputs(reference.inputs, options.inputs)
    val_path = options.val or options.calib
    val, calib = open_deploy_data(val_path, inputs, options)
    # every row starts from one checked ONNX: opset >= 13, dynamic axes fixed at the data's shape
    normalized = normalized_source(reference, out_dir, inputs, calib if calib is not None else val)
    if normalized is not reference:
        reference, inputs = normalized, resolve_inputs(normalized.inputs, options.inputs)
        val, calib = open_deploy_data(val_path, inputs, options)
    task = TaskChoice(options.task or next((p.task for p in profiles if p.task), None), options.labels, options.masks)
    ref_outputs = reference_outputs(reference, val, task=task) if val is not None else None
    builds = DeployBuilds(DeployRun(reference, tuple(inputs), calib, val, ref_outputs, options, out_dir))
    builds.rows.total = sum(len(row_precisions(options, p)) for p in profiles)
    results = [row for profile in profiles for row in profile_rows(builds, profile)]
    model = model_block(model_spec, reference, val, options)
    if pruning := reference.provenance.get("pruning"):
        model["pruning"] = pruning
        for row in results:
            row["prune_ratio"] = pruning["ratio"]
    env = environment()
    if options.devices:
        env = report_environment(env, results)
    report = build_report(model, env, results)
    paths = write_reports(report, out_dir)
    return DeployResult(report, paths, exit_code_for(results, options.skip_unavailable))


def model_block(model_spec: str, reference: Artifact, val, options: DeployOptions) -> dict:
    """report.json's `model`: the source, the reference's hash, inputs and size, and what validated it."""
    info = describe_onnx(reference.path)
    val_path = options.val or options.calib
    val_name = str(getattr(val_path, "path", val_path)) if val_path else None  # a path, or a data source's
    return {
        "source": str(model_spec), "sha256": file_sha256(reference.path),
        "inputs": [s.to_dict() for s in reference.inputs], "outputs": reference.outputs,
        "params": info.params, "macs": info.macs,
        "validation": {"data": val_name, "samples": len(val) if val else 0,
                       "calibration_is_validation": bool(val_path and not options.val)},
    }


def report_environment(host_env: dict, results: list[dict]) -> dict:
    """The report's environment describes where it measured: the device when there is one, else each device
    under `devices` (and the host that built the artifacts under `host`)."""
    envs = {r["device"]: r["environment"] for r in results if r.get("environment")}
    if len(envs) == 1:
        return {**next(iter(envs.values())), "host": host_env}
    return {**host_env, "devices": envs}


def exit_code_for(results: list[dict], skip_unavailable: bool) -> int:
    codes = [r.get("exit_code", 0) for r in results if r["status"] == "failed"]
    if codes:
        return max(codes)
    if not skip_unavailable and any(r["status"] == "skipped" and r.get("exit_code") for r in results):
        return TargetUnavailableError.exit_code
    # rows checked on the CPU only (TensorRT missing here) still fail on their accuracy budgets
    return 0 if all(r.get("passed", True) for r in results if r["status"] == "ok" or r.get("simulated")) else 1


def open_deploy_data(val_path, inputs, options: DeployOptions) -> tuple:
    """(validation, calibration) sources read for `inputs`; either is None when not given."""
    val = as_data(val_path, inputs, options.preprocess, options.labels, options.val_limit, options.consts)
    calib = as_data(options.calib, inputs, options.preprocess, options.labels, consts=options.consts)
    return val, calib


def prepare_reference(model_spec: str, options: DeployOptions, out_dir: Path) -> Artifact:
    """reference.onnx (and model.pt2 for a PyTorch model) in the output folder."""
    from edgekit.core.torch_model import is_pytorch_spec

    target = out_dir / "reference.onnx"
    if is_pytorch_spec(model_spec):
        return _export_reference(model_spec, options, out_dir)
    src = Path(model_spec)
    if src.suffix != ".onnx":
        raise InvalidInputError(f"unsupported model '{model_spec}'", hint="give an .onnx file or a PyTorch model")
    info = describe_onnx(src)  # validates the file before anything is written
    if src.resolve() != target.resolve():
        for data in external_data_files(src):  # the weights go with their model, under the names it reads
            with atomic_path(out_dir / data.name) as tmp:
                shutil.copyfile(data, tmp)
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
    art = Artifact(target, "onnx", info.precision, None, info.inputs, info.outputs, {"from": str(src)})
    return art.save_sidecar()


def _export_reference(model_spec: str, options: DeployOptions, out_dir: Path) -> Artifact:
    """A PyTorch model (pruned first when asked) saved as model.pt2 and exported to reference.onnx."""
    from edgekit.core.torch_model import load_torch_model
    from edgekit.stages.export import ExportOptions, export_onnx, save_pt2

    model = load_torch_model(model_spec, options.weights, options.trust_pickle)
    if not options.inputs:
        raise InvalidInputError("a PyTorch model needs its inputs", hint="--input input:1x3x224x224")
    pruning = None
    if options.prune:
        from edgekit.stages.prune.run import prune_for_deploy

        model, pruning = prune_for_deploy(model, options)
    pt2 = save_pt2(model, out_dir / "model.pt2", options.inputs)
    art = export_onnx(model, out_dir / "reference.onnx", ExportOptions(inputs=options.inputs), source_name=model_spec)
    if pruning:  # the report's model block and rows read it from here
        for a in (pt2, art):
            a.provenance["pruning"] = pruning
            a.save_sidecar()
    return art
