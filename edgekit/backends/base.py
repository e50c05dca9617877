"""The Backend and Runner interfaces every target implements (see DESIGN.md).

Everything a caller needs to know about a target is asked here, never by its name: each
capability has a default that fits a plain ONNX-named CPU target, and a target overrides what
differs.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.core.artifact import Artifact
from edgekit.core.errors import InvalidInputError, TargetUnavailableError
from edgekit.core.tensors import TensorSpec
from edgekit.onnx.sensitivity import LayerError, layer_errors


@dataclass(frozen=True)
class QuantOptions:
    """Target-independent int8 settings; `extra` carries target-specific ones."""

    method: str = "auto"  # auto (the target's own choice for the model) | minmax | entropy | percentile
    per_channel: bool = True
    max_samples: int = 300
    exclude: tuple[str, ...] = ()  # node names / op types kept in float
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CompileOptions:
    precision: str = "fp32"
    inputs: tuple[TensorSpec, ...] = ()  # shape overrides
    extra: dict = field(default_factory=dict)
    consts: dict = field(default_factory=dict)  # input name -> the array every run gives it (--const)


@dataclass(frozen=True)
class SensitivityTask:
    """What a float-fallback ranking (Backend.layer_sensitivity) works from."""

    int8: Artifact | None  # the int8 the layers fall back from, as the target built it
    quant: QuantOptions  # the options it was built with
    reference: Artifact  # the FP32 ONNX
    source: Artifact  # what the target converts from (tflite: the .pt2), else the reference
    calib: object  # calibration data, for a proxy int8 when the target's own cannot be tapped
    sample: object  # the data the layers are scored on
    max_samples: int
    work: Path  # scratch folder for intermediate models


@dataclass(frozen=True)
class LayerRanking:
    rows: list[LayerError]  # most int8 error added first
    names: frozenset[str]  # the node names the target's `QuantOptions.exclude` resolves

    @classmethod
    def named_by_rows(cls, rows: list[LayerError]) -> "LayerRanking":
        """A ranking on the target's own model, whose rows already carry the names `exclude` takes."""
        return cls(rows, frozenset({r.name for r in rows} | {n for r in rows for n in r.float_nodes}))


class Runner(abc.ABC):
    """Loaded model ready to infer. Takes/returns float arrays in the ONNX layout (NCHW stays NCHW)."""

    input_specs: list[TensorSpec]
    output_names: list[str]
    load_ms: float = 0.0
    # what really ran, when it differs from the artifact (OpenVINO bf16 on AMX, say)
    effective_precision: str | None = None

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass

    @abc.abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ...

    def reset_timings(self) -> None:
        """Forget the device timings gathered so far (a runner that keeps none has nothing to do)."""

    def timing_report(self, skip: int) -> dict | None:
        """Device-side timings of the runs after the first `skip` (GPU compute, copies), or None."""
        return None


class Backend(abc.ABC):
    name: str
    # format of the file this target deploys (the output of compile)
    deploy_format: str
    # other formats its runner loads (onnxruntime: .ort)
    other_formats: tuple[str, ...] = ()
    # formats `edgekit inspect-quant` reads with inspect_layers
    inspectable_formats: tuple[str, ...] = ("onnx",)
    # precisions it builds (a sweep refuses the others before any work)
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    # converts from the PyTorch .pt2 when there is one
    prefers_pytorch: bool = False
    # the deployable file is built on the device itself (not portable)
    builds_on_device: bool = False
    # without its runtime it can still make the file it would build from and check it on the CPU
    has_cpu_fallback: bool = False
    # can keep named layers in float (QuantOptions.exclude)
    supports_float_fallback: bool = True

    @abc.abstractmethod
    def check_available(self) -> None:
        """Raise TargetUnavailableError saying what to install."""

    @abc.abstractmethod
    def versions(self) -> dict[str, str]:
        """Runtime library versions, for environment capture."""

    @abc.abstractmethod
    def quantize(self, source: Artifact, calib, options: QuantOptions, out_dir: Path) -> Artifact:
        """Target-native int8 from the FP32 source and calibration data."""

    @abc.abstractmethod
    def compile(self, source: Artifact, profile, out_dir: Path, options: CompileOptions) -> Artifact:
        """The deployable file for the profile."""

    @abc.abstractmethod
    def runner(self, artifact: Artifact, threads: int | None = None, profile=None) -> Runner:
        ...

    def check_quantize_available(self) -> None:
        """Raise TargetUnavailableError unless `quantize` can run here."""
        self.check_available()

    def fp16_onnx(self, source: Artifact, out_dir: Path, calib=None) -> Artifact:
        """The float16 ONNX of `quantize --precision fp16`, for targets that build from one."""
        raise InvalidInputError(f"--precision fp16 is a tensorrt step, not {self.name}",
                                hint=f"edgekit compile MODEL --target {self.name} --precision fp16")

    def cpu_fallback(self, source: Artifact, calib, precision: str, quant: QuantOptions, out_dir: Path) -> Artifact:
        """What the target would build from, made here to be checked on the CPU (has_cpu_fallback)."""
        raise TargetUnavailableError(f"target '{self.name}' has no CPU fallback")

    def calibration_variants(self, quant: QuantOptions, reference: Path) -> list[dict]:
        """Calibration settings the accuracy search tries before any layer leaves int8, most promising
        first. Each is a change of QuantOptions (`extra` merged, `exclude` added); the optional "cost"
        key is its build time in default builds."""
        return []

    def measurable_quant_options(self, quant: QuantOptions) -> QuantOptions | None:
        """Options under which an int8 this target refuses (CheckFailedError) is built anyway, so the
        accuracy search can measure it; None when a refusal ends the search."""
        return None

    def layer_sensitivity(self, task: SensitivityTask) -> LayerRanking:
        """Layers ranked by the int8 error they add, named as `exclude` takes them: on the target's own
        Q/DQ ONNX, or on an ONNX Runtime proxy of the same graph."""
        return qdq_layer_ranking(task, names_from_reference=False)

    def inspect_layers(self, artifact: Artifact, reference: Path, data, max_samples: int) -> list[LayerError]:
        """Per-layer int8 error of `artifact` (one of inspectable_formats) against `reference`."""
        return layer_errors(reference, artifact.path, data, max_samples)


def qdq_layer_ranking(task: SensitivityTask, names_from_reference: bool) -> LayerRanking:
    """The ranking on the Q/DQ ONNX of `task.int8` (or a proxy), named by its own nodes, or by the
    reference's when the target resolves `exclude` on the model it converts."""
    from edgekit.core.onnx_model import load_onnx  # onnx loads only when a search ranks layers

    qdq = qdq_onnx(task)
    rows = layer_errors(task.reference.path, qdq, task.sample, task.max_samples)
    graph = load_onnx(task.reference.path if names_from_reference else qdq, load_external_data=False).graph
    return LayerRanking(rows, frozenset(n.name for n in graph.node))


def qdq_onnx(task: SensitivityTask) -> Path:
    """The int8 model as Q/DQ ONNX: the target's own, else an ONNX Runtime proxy of the same graph."""
    int8 = task.int8
    if int8 is not None and int8.format == "onnx" and int8.precision == "int8":
        return int8.path
    from edgekit.backends.registry import get_backend  # resolved at run time: registry names every target

    quant = task.quant
    same = {k: quant.extra[k] for k in ("smooth_quant", "bias_correction", "mixed_range_float") if k in quant.extra}
    proxy_quant = QuantOptions(method=quant.method, per_channel=quant.per_channel, max_samples=quant.max_samples,
                               exclude=(), extra=same)
    return get_backend("onnxruntime").quantize(task.reference, task.calib, proxy_quant, task.work / "proxy").path
