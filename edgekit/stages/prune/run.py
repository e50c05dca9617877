"""Structured pruning: channels really removed (torch-pruning), recovered without labels, measured.

`prune_model` works on a live nn.Module (the Python API); `prune_file` is `edgekit prune`: load a
PyTorch model, prune, recover, report, save as `.pt2` or ONNX; `prune_for_deploy` is
`edgekit deploy --prune`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgekit.core.arrays import parse_consts
from edgekit.core.data import Preprocess
from edgekit.core.errors import InvalidInputError
from edgekit.core.tensors import TensorSpec
from edgekit.stages.bench import BenchOptions
from edgekit.stages.prune.recover import RecoveryOptions
from edgekit.stages.prune.structure import PruneSpec

DEFAULT_ROUND_TO = 8  # with a --profile: channel multiples that vector units / tensor cores like
ONNX_ONLY_MESSAGE = "structured pruning needs the PyTorch model"
ONNX_ONLY_HINT = "pass the model as file.py:factory (with --weights), package.module:factory or a .pt2"


@dataclass(frozen=True)
class PruneOptions:
    spec: PruneSpec
    inputs: tuple[TensorSpec, ...]
    calib: str | None = None  # BatchNorm re-estimation (and Taylor importance)
    distill: str | None = None  # unlabelled data to distill on
    val: str | None = None  # agreement / accuracy before and after (default: distill or calib data)
    preprocess: Preprocess | None = None
    labels: str | None = None
    consts: dict = field(default_factory=dict)  # inputs every sample shares (edgekit.core.data.parse_consts)
    recovery: RecoveryOptions = field(default_factory=RecoveryOptions)
    profile: str | None = None  # latency before/after on this profile's target
    bench: BenchOptions = field(default_factory=lambda: BenchOptions(min_seconds=1.0))


@dataclass
class PruneResult:
    model: object  # the pruned nn.Module
    report: dict
    masks: dict = field(default_factory=dict)  # 2:4 masks by layer name


def prune_model(model, options: PruneOptions, source: str = "") -> PruneResult:
    """Prune a live model (not modified: a pruned copy is returned) and recover it."""
    import torch

    from edgekit.stages.prune import recover as rec
    from edgekit.stages.prune import structure as core

    specs = list(options.inputs)
    if not specs:
        raise InvalidInputError("a PyTorch model needs its inputs", hint="--input input:1x3x224x224")
    if options.distill and options.recovery.epochs < 1:
        raise InvalidInputError("--distill needs --epochs N (N >= 1)")
    teacher = as_prunable(model, source)
    spec = options.spec
    if options.profile:
        profile = _usable_profile(options.profile)  # a missing runtime fails before the pruning work
        if spec.round_to is None:
            spec = replace(spec, round_to=_profile_round_to(profile))
    data = _Data(options, specs)
    _check_runs(teacher, specs)
    student = copy.deepcopy(teacher)
    params0, macs0 = core.count_params_macs(teacher, specs)
    widths0 = core.layer_widths(teacher)
    kept: list[str] = []
    if spec.ratio > 0:
        gradients = rec.taylor_gradients(data.calib_batches()) if spec.criterion == "taylor" and data.any_data else None
        with torch.enable_grad():
            kept = core.prune_channels(student, specs, spec, gradients)
    masks = core.sparsify_2_4(student, skip=tuple(kept)) if spec.pattern == "2:4" else {}
    params1, macs1 = core.count_params_macs(student, specs)
    widths1 = core.layer_widths(student)
    report = {
        "source": source, "ratio": spec.ratio, "criterion": spec.criterion,
        "scope": "global" if spec.global_ranking else "per-layer", "round_to": spec.round_to,
        "pattern": spec.pattern, "ignored": list(spec.ignore), "kept_whole": kept,
        "params": _before_after(params0, params1), "macs": _before_after(macs0, macs1),
        "layers": [{"name": n, "before": widths0[n], "after": widths1.get(n)} for n in widths0],
    }
    if masks:
        report["sparsity"] = {"pattern": "2:4", "layers": sorted(masks)}
    report["recovery"], report["accuracy"] = _recover(teacher, student, data, options, masks)
    if options.profile:
        from edgekit.stages.prune.latency import latency_before_after

        report["latency"] = latency_before_after(teacher, student, specs, options.profile, options.bench)
    return PruneResult(student, report, masks)


def _recover(teacher, student, data: "_Data", options: PruneOptions, masks: dict) -> tuple[dict, dict | None]:
    from edgekit.stages.prune import recover as rec
    from edgekit.stages.validate import compare

    val = data.val_batches()
    outputs = rec.ModelOutputs()  # a state of a model is run over a data set once, whichever check asks
    ref = rec.reference_outputs(teacher, val, outputs) if val is not None else None
    accuracy = {"data": data.val_path, "samples": len(val)} if val is not None else None

    def measure(stage: str, same_as: str | None = None) -> None:
        if ref is not None:  # statistics restored to an earlier stage's: its numbers, without a rerun
            accuracy[stage] = accuracy[same_as] if same_as else compare(ref, rec.predictions(student, val, outputs))

    measure("pruned")
    recovery: dict = {"batchnorm": None, "distillation": None}
    calib = data.calib_batches()
    if calib is not None:
        recovery["batchnorm"] = rec.reestimate_batchnorm_checked(student, teacher, calib, options.recovery, outputs)
        if recovery["batchnorm"]["layers"]:
            measure("batchnorm", same_as="pruned" if not recovery["batchnorm"]["kept"] else None)
    if options.distill:
        recovery["distillation"] = rec.distill(student, teacher, data.distill_batches(), options.recovery, masks, outputs)
        measure("distilled")
    return recovery, accuracy


class _Data:
    """The data sources of one pruning run, each loaded once, only when needed."""

    def __init__(self, options: PruneOptions, specs: list[TensorSpec]):
        from edgekit.core.data import open_data

        self.options, self.specs = options, specs
        self.calib_path = options.calib or options.distill
        self.val_path = options.val or options.distill or options.calib
        self.any_data = bool(self.calib_path)
        # opened now so a wrong path or shape fails before any pruning work; read later, once
        paths = dict.fromkeys(p for p in (options.calib, options.distill, options.val) if p)
        self._sources = {p: open_data(p, specs, options.preprocess, options.labels, consts=options.consts) for p in paths}
        self._cache: dict[str, object] = {}

    def _batches(self, path: str | None, what: str):
        if path is None:
            return None
        if path not in self._cache:
            from edgekit.stages.prune.recover import Batches

            self._cache[path] = Batches(self._sources[path], self.specs, self.options.recovery.max_samples,
                                        f"loading {what} data")
        return self._cache[path]

    def calib_batches(self):
        return self._batches(self.calib_path, "calibration")

    def distill_batches(self):
        return self._batches(self.options.distill, "distillation")

    def val_batches(self):
        return self._batches(self.val_path, "validation")


def as_prunable(model, source: str = ""):
    """The model as an nn.Module torch-pruning can trace; a loaded .pt2 is rebuilt from its graph."""
    import torch

    from edgekit.stages.prune.fx import is_exported_module, modules_from_exported

    if isinstance(model, torch.jit.ScriptModule):
        raise InvalidInputError(
            f"{source or 'the model'} is TorchScript, whose layers are compiled code that pruning cannot change",
            hint=ONNX_ONLY_HINT,
        )
    if is_exported_module(model):
        return modules_from_exported(model, source or ".pt2")
    if not isinstance(model, torch.nn.Module):
        raise InvalidInputError(f"{source or 'the model'} is a {type(model).__name__}, not a torch.nn.Module")
    return copy.deepcopy(model).eval()


def _check_runs(model, specs) -> None:
    import torch

    from edgekit.stages.prune.structure import example_inputs

    try:
        with torch.no_grad():
            model(*example_inputs(specs))
    except Exception as e:
        shapes = ", ".join(f"{s.name}:{s.display_shape()}" for s in specs)
        raise InvalidInputError(f"the model does not run on inputs {shapes}: {str(e).splitlines()[0] if str(e) else e!r}",
                                hint="check --input") from e


def _usable_profile(profile_name: str):
    from edgekit.backends.registry import get_backend, load_profile

    profile = load_profile(profile_name)
    get_backend(profile.runtime.target).check_available()
    return profile


def _profile_round_to(profile) -> int:
    value = profile.runtime.options.get("round_to", DEFAULT_ROUND_TO)
    if not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"runtime.options.round_to = {value!r} in {profile.source} must be a positive integer")
    return value


def _before_after(before: int, after: int) -> dict:
    return {"before": before, "after": after, "ratio": round(after / before, 4) if before else None}


def summary(report: dict) -> dict:
    """The compact block that travels in sidecars and deploy reports."""
    keys = ("ratio", "criterion", "scope", "round_to", "pattern", "params", "macs", "kept_whole")
    out = {k: report[k] for k in keys}
    if report.get("accuracy"):
        last = next(s for s in ("distilled", "batchnorm", "pruned") if s in report["accuracy"])
        out["agreement_with_unpruned"] = _agreement(report["accuracy"][last])
        out["accuracy_stage"] = last
    return out


def _agreement(acc: dict) -> dict:
    keys = ("top1_agreement", "top1_agreement_confident", "cosine_mean", "task_metric")
    return {k: acc.get(k) for k in keys if acc.get(k) is not None}


def prune_file(model_spec: str, out: Path, options: PruneOptions, weights: str | None = None,
               trust_pickle: bool = False) -> dict:
    """`edgekit prune`: load, prune, recover, save as .pt2 (or .onnx); returns the report."""
    from edgekit.core.torch_model import is_pytorch_spec, load_torch_model

    out = Path(out)
    if out.suffix not in (".pt2", ".onnx"):
        raise InvalidInputError(f"cannot write a pruned model as '{out.suffix}'", hint="use -o pruned.pt2 or -o pruned.onnx")
    reject_onnx(model_spec)
    if not is_pytorch_spec(model_spec):
        raise InvalidInputError(f"unsupported model '{model_spec}'", hint=ONNX_ONLY_HINT)
    model = load_torch_model(model_spec, weights, trust_pickle)
    result = prune_model(model, options, source=model_spec)
    report = result.report
    report["output"] = str(out)
    provenance = {"from": model_spec, "pruning": summary(report)}
    if result.masks:
        provenance["sparsity"] = "2:4"  # the TensorRT build enables sparse weights on this
        provenance["sparse_layers"] = sorted(result.masks)
    if out.suffix == ".pt2":
        from edgekit.stages.export import save_pt2

        art = save_pt2(result.model, out, list(options.inputs))
    else:
        from edgekit.stages.export import ExportOptions, export_onnx

        art = export_onnx(result.model, out, ExportOptions(inputs=tuple(options.inputs)), source_name=model_spec)
    art.provenance.update(provenance)
    art.save_sidecar()
    return report


def reject_onnx(model_spec: str) -> None:
    if str(model_spec).lower().endswith(".onnx"):
        raise InvalidInputError(f"{ONNX_ONLY_MESSAGE}; {model_spec} is an ONNX file", hint=ONNX_ONLY_HINT)


def prune_for_deploy(model, deploy_options) -> tuple[object, dict]:
    """`deploy --prune RATIO`: prune, re-estimate BatchNorm on --calib, measure agreement on --val."""
    o = deploy_options
    options = PruneOptions(spec=PruneSpec(ratio=o.prune), inputs=tuple(o.inputs), calib=o.calib,
                           val=o.val or o.calib, preprocess=o.preprocess, labels=o.labels,
                           consts=parse_consts(o.consts), recovery=RecoveryOptions(max_samples=300))
    result = prune_model(model, options, source="deploy")
    return result.model, summary(result.report)
