"""`edgekit compile`: the target's deployable file, built here or, for a target that builds on the device
(TensorRT engines are not portable), on the device given with --device."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.backends.base import CompileOptions
from edgekit.backends.registry import get_backend
from edgekit.core.arrays import constant_feed, parse_consts
from edgekit.core.artifact import Artifact
from edgekit.core.errors import InvalidInputError
from edgekit.core.tempdirs import temp_files_in
from edgekit.pipeline.arguments import (
    DeviceOptions,
    as_output_folder,
    as_profile,
    as_specs,
    check_choice,
    load_source,
    merge_inputs,
)
from edgekit.stages.normalize import normalized_source, removed_on_failure

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ArtifactResult:
    """A command that wrote one artifact."""

    artifact: Artifact

    def to_dict(self) -> dict:
        art = self.artifact
        return {"artifact": art.to_dict(), "path": str(art.path), "size_bytes": art.size_bytes()}


@dataclass(frozen=True, kw_only=True)
class CompileRequest(DeviceOptions):
    """The options of `edgekit compile`, named as its long options."""

    target: str | None = None  # default: the profile's, else onnxruntime
    profile: object = None
    precision: str = "fp32"
    ort_format: bool = False
    inputs: tuple = ()
    consts: tuple = ()  # NAME=VALUE: the value a conversion sample gives that input (a branch a model takes)
    output: str

    def __post_init__(self):
        check_choice("precision", self.precision, PRECISIONS)


def compile_model(model, request: CompileRequest) -> ArtifactResult:
    """Its temporary files (and every library's) inside the output folder (core/tempdirs.py)."""
    with temp_files_in(as_output_folder(request.output)):
        return _compile_model(model, request)


def _compile_model(model, request: CompileRequest) -> ArtifactResult:
    prof = as_profile(request.profile)
    backend = get_backend(request.target or (prof.runtime.target if prof else "onnxruntime"))
    device = request.device_args()
    if device.given and not backend.builds_on_device:
        raise InvalidInputError(f"--device builds TensorRT engines on the device; target '{backend.name}' compiles here",
                                hint="use --target tensorrt, or drop --device and copy the artifact")
    places = device.places()
    if len(places) != 1:
        raise InvalidInputError("an engine is built on one device at a time",
                                hint="engines are not portable: build on each device model with its own -o folder")
    if not device.given:
        backend.check_available()  # before any file is written (a device checks its own)
    specs, out = as_specs(request.inputs), as_output_folder(request.output)
    extra = dict(prof.runtime.options) if prof else {}
    if request.ort_format:
        extra["ort_format"] = True
    original = load_source(model, specs, out)
    inputs = merge_inputs(original.inputs, specs)
    consts = constant_feed(inputs, parse_consts(request.consts))
    source = normalized_source(original, out, inputs)  # opset >= 13, --input shapes fixed
    options = CompileOptions(request.precision, specs, extra, consts)
    with removed_on_failure(source, original):
        return ArtifactResult(places[0].compile(backend, source, prof, out, options))
