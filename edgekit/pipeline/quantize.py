"""`edgekit quantize`: int8 post-training quantization with the target's native quantizer, searched until it
meets an accuracy budget when one applies, and validated against the FP32 reference when asked."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from edgekit.backends.base import QuantOptions
from edgekit.backends.registry import get_backend
from edgekit.core.artifact import Artifact
from edgekit.core.errors import InvalidInputError
from edgekit.core.tempdirs import temp_files_in
from edgekit.pipeline.arguments import (
    DataOptions,
    TaskOptions,
    as_data,
    as_output_folder,
    as_preprocess,
    as_profile,
    as_specs,
    check_choice,
    is_onnx_model,
    load_source,
    merge_inputs,
)
from edgekit.pipeline.compile import ArtifactResult

METHODS = ("auto", "minmax", "entropy", "percentile")


@dataclass(frozen=True, kw_only=True)
class QuantizeRequest(DataOptions, TaskOptions):
    """The options of `edgekit quantize`, named as its long options."""

    target: str | None = None  # default: the profile's, else onnxruntime
    profile: object = None
    calib: object  # calibration data: a path or a data source
    val: object = None
    reference: object = None  # the FP32 ONNX (default: MODEL when it is ONNX)
    method: str = "auto"  # the target's choice (edgekit.backends.onnxruntime.resolved_method)
    per_tensor: bool = False
    max_samples: int = 300
    precision: str = "int8"
    exclude: tuple = ()
    int8_io: bool = False
    accuracy_budget: float | None = None
    search_time: float | None = None  # the search's safety net (None: SearchOptions' default)
    max_float_layers: int = 16
    output: str

    def __post_init__(self):
        check_choice("method", self.method, METHODS)
        check_choice("precision", self.precision, ("int8", "fp16"))


@dataclass(frozen=True)
class QuantizeResult(ArtifactResult):
    accuracy: dict | None = None  # against the FP32 reference on --val

    @property
    def search(self) -> dict | None:
        """The accuracy search's record, when one ran (edgekit.stages.search)."""
        return self.artifact.provenance.get("accuracy_search")

    @property
    def exit_code(self) -> int:
        return 1 if self.search and not self.search["met"] else 0  # missed: the most accurate int8 is kept

    def to_dict(self) -> dict:
        return {**super().to_dict(), **({"accuracy": self.accuracy} if self.accuracy is not None else {})}


def quantize(model, request: QuantizeRequest) -> QuantizeResult:
    """Its temporary files (and every library's) inside the output folder (core/tempdirs.py)."""
    with temp_files_in(as_output_folder(request.output)):
        return _quantize(model, request)


def _quantize(model, request: QuantizeRequest) -> QuantizeResult:
    from edgekit.stages.normalize import normalized_source, removed_on_failure
    from edgekit.stages.validate import validate_artifact

    r = request
    prof = as_profile(r.profile)
    choice = r.task_choice(r.labels, prof.task if prof else None)  # an unknown task fails before any work
    backend = get_backend(r.target or (prof.runtime.target if prof else "onnxruntime"))
    backend.check_quantize_available()
    reference = r.reference or (model if is_onnx_model(model) else None)
    if (r.val is not None or r.accuracy_budget is not None) and reference is None:  # before any work or file
        flag = "--val" if r.val is not None else "--accuracy-budget"
        raise InvalidInputError(f"{flag} needs an FP32 ONNX reference for a non-ONNX model",
                                hint="pass --reference model.onnx (edgekit export writes one)")
    given, out, preprocess = as_specs(r.inputs), as_output_folder(r.output), as_preprocess(r.preprocess)
    source = load_source(model, given, out)
    specs = merge_inputs(source.inputs, given)
    data = as_data(r.calib, specs, preprocess, r.labels, consts=r.consts)
    original, normalized = source, normalized_source(source, out, specs, data)  # opset >= 13, shapes fixed from the data
    if normalized is not source:  # the data is read for the shapes the targets now see
        source, specs = normalized, merge_inputs(normalized.inputs, given)
        data = as_data(r.calib, specs, preprocess, r.labels, consts=r.consts)
    with removed_on_failure(source, original):  # a failed command keeps no normalised model
        opts = QuantOptions(method=r.method, per_channel=not r.per_tensor, max_samples=r.max_samples,
                            exclude=tuple(r.exclude),
                            extra={**(prof.runtime.options if prof else {}), **({"int8_io": True} if r.int8_io else {})})
        if r.precision == "fp16":
            art = backend.fp16_onnx(source, out, data)
        elif r.accuracy_budget is not None or profile_budgets(prof, source):  # searched until it meets the budget
            check = as_data(r.val if r.val is not None else r.calib, specs, preprocess, r.labels,
                            consts=r.consts)
            art = searched_int8(backend, source, (data, check, choice), opts, r, prof, reference)
        else:
            art = backend.quantize(source, data, opts, out)
        if "normalized" in source.provenance:  # what was changed before the target saw the model
            art = replace(art, provenance={**art.provenance, "normalized": source.provenance["normalized"]}).save_sidecar()
        accuracy = None
        if r.val is not None:
            accuracy = validate_artifact(art, reference, as_data(r.val, specs, preprocess, r.labels, consts=r.consts),
                                        task=choice)
    return QuantizeResult(art, accuracy)


def searched_int8(backend, source: Artifact, data: tuple, quant: QuantOptions, request: QuantizeRequest, prof,
                  reference) -> Artifact:
    """The int8 that meets --accuracy-budget (or the profile's budgets), measured on (calib, check, task choice)."""
    from edgekit.stages.search import BudgetData, quantize_with_budget, search_options

    budget = request.accuracy_budget if request.accuracy_budget is not None else prof.budgets.max_accuracy_drop
    search = search_options(budget, prof.budgets if prof else None, request.search_time, request.max_float_layers)
    out = Path(request.output)
    ref_art = load_source(reference, (), out) if reference is not None else None
    calib, check, choice = data
    return quantize_with_budget(backend, source, BudgetData(calib, check, ref_art, choice), quant, out, search,
                                prof).artifact


def profile_budgets(prof, source: Artifact) -> bool:
    """The profile's accuracy budgets apply to int8 quantized from an FP32 ONNX (the reference they are measured on)."""
    return (prof is not None and source.format == "onnx" and source.precision == "fp32"
            and any(v is not None for v in prof.budgets.accuracy_keys()))
