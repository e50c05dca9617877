"""What to build, as a pure function of model + settings + TensorRT version + device.

`plan_build` decides network flags, builder flags, memory pool, optimization level,
compatibility levels and optimization profiles; `tensorrt_engine` only replays the plan through
the TensorRT API. So the version logic (10.x vs 11.x) is tested here without TensorRT or a GPU.

TensorRT facts the plan encodes:
- 11.x networks are always strongly typed (the STRONGLY_TYPED flag is ignored); the INT8/FP16
  builder flags and the calibrators are gone. Precision comes from the ONNX: Q/DQ for int8,
  float16 tensors for fp16.
- 10.x still has the weakly typed mode (deprecated); we ask for STRONGLY_TYPED so the same ONNX
  builds the same engine on 10 and 11.
- TF32 stays on by default (as in trtexec); `tf32 = false` clears it for bit-closer fp32.
- Hardware compatibility (Ampere+) is not supported on Jetson/JetPack; version-compatible
  engines need the runtime to allow engine host code.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

from edgekit.core.errors import InvalidInputError, TargetUnavailableError
from edgekit.core.tensors import TensorSpec

HARDWARE_COMPATIBILITY = {"none": None, "ampere+": "AMPERE_PLUS", "same-compute-capability": "SAME_COMPUTE_CAPABILITY"}
MIN_VERSION = (10, 0)


@dataclass(frozen=True, order=True)
class TrtVersion:
    major: int
    minor: int = 0
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> "TrtVersion":
        m = re.match(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text).strip())
        if not m:
            raise InvalidInputError(f"not a TensorRT version: '{text}'")
        return cls(*(int(g) if g else 0 for g in m.groups()))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class DeviceFacts:
    """The GPU an engine is built for or loaded on."""

    name: str
    compute_capability: str  # "8.7"
    cuda_runtime: str | None = None
    cuda_driver: str | None = None
    arch: str = "x86_64"
    integrated: bool = False  # Jetson (iGPU, JetPack)

    @property
    def sm(self) -> tuple[int, int]:
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)


@dataclass(frozen=True)
class ShapeRange:
    """One input of an optimization profile: TensorRT tunes for `opt` and accepts min..max."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class BuildSettings:
    """Build options from the profile's [runtime.options] (or compile --json extras)."""

    workspace_mb: int | None = None  # None: TensorRT's default (all device memory)
    optimization_level: int = 3  # builder_optimization_level, 0 (fast build) .. 5 (slow, fastest engine)
    hardware_compatibility: str = "none"  # none | ampere+ | same-compute-capability
    version_compatible: bool = False
    tf32: bool = True
    max_batch: int | None = None  # dynamic batch: largest batch the engine accepts
    opt_batch: int | None = None  # dynamic batch: the batch TensorRT tunes for
    shapes: dict = field(default_factory=dict)  # input -> "MINxDIMS,OPTxDIMS,MAXxDIMS"
    timing_cache: bool = True
    sparse_weights: bool = False  # 2:4-sparse weights (edgekit prune --pattern 2:4) -> sparse tensor cores

    @classmethod
    def from_options(cls, extra: dict) -> "BuildSettings":
        known = {f.name: f for f in fields(cls)}
        values = {k: v for k, v in extra.items() if k in known}
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not isinstance(self.optimization_level, int) or not 0 <= self.optimization_level <= 5:
            raise InvalidInputError(f"tensorrt option optimization_level = {self.optimization_level!r}",
                                    hint="an integer from 0 (fast build) to 5 (slow build, fastest engine)")
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise InvalidInputError(f"tensorrt option hardware_compatibility = '{self.hardware_compatibility}'",
                                    hint=f"one of {', '.join(HARDWARE_COMPATIBILITY)}")
        for name in ("workspace_mb", "max_batch", "opt_batch"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidInputError(f"tensorrt option {name} = {value!r}", hint="a positive integer")
        if not isinstance(self.shapes, dict):
            raise InvalidInputError("tensorrt option shapes must be a table: { input = \"1x3x224x224,4x3x224x224,8x3x224x224\" }")


@dataclass(frozen=True)
class BuildPlan:
    trt_version: str
    precision: str
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    cleared_builder_flags: tuple[str, ...]
    workspace_bytes: int | None
    optimization_level: int
    hardware_compatibility: str | None  # HardwareCompatibilityLevel member name
    version_compatible: bool
    profiles: tuple[ShapeRange, ...]
    timing_cache_file: str | None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["profiles"] = [{"name": p.name, "min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in self.profiles]
        return d


def plan_build(inputs: list[TensorSpec], model_precision: str, requested: str, settings: BuildSettings,
               version: TrtVersion, device: DeviceFacts | None, overrides: tuple[TensorSpec, ...] = ()) -> BuildPlan:
    """The build plan; raises a typed error for what cannot be built (and says what to do)."""
    if (version.major, version.minor) < MIN_VERSION:
        raise TargetUnavailableError(
            f"TensorRT {version} is too old: edgekit builds strongly typed networks (TensorRT 10 or newer)",
            hint="pip install 'edgekit[tensorrt]' (TensorRT 10/11); on Jetson: JetPack 6 or newer")
    precision = _engine_precision(model_precision, requested)
    notes = [f"precision {precision} comes from the ONNX (strongly typed network; no INT8/FP16 builder flags)"]
    if version.major >= 11:
        network_flags: tuple[str, ...] = ()  # always strongly typed; the flag is ignored
        notes.append("TensorRT 11: strongly typed is always on")
    else:
        network_flags = ("STRONGLY_TYPED",)
    builder_flags: list[str] = []
    if settings.version_compatible:
        builder_flags.append("VERSION_COMPATIBLE")
        notes.append("version compatible: loads on later TensorRT releases of the same major version")
    if settings.sparse_weights:
        builder_flags.append("SPARSE_WEIGHTS")
        notes.append("2:4 sparse weights: TensorRT may pick sparse tensor-core kernels (Ampere or newer)")
    level = HARDWARE_COMPATIBILITY[settings.hardware_compatibility]
    if level and device is not None:
        if device.integrated:
            raise InvalidInputError("hardware_compatibility is not supported on Jetson (JetPack)",
                                    hint="build the engine on each Jetson model it runs on")
        if level == "AMPERE_PLUS" and device.sm < (8, 0):
            raise InvalidInputError(f"hardware_compatibility = ampere+ needs an Ampere or newer GPU to build on, "
                                    f"this is {device.name} (sm_{device.sm[0]}{device.sm[1]})")
    return BuildPlan(
        trt_version=str(version), precision=precision, network_flags=network_flags,
        builder_flags=tuple(builder_flags), cleared_builder_flags=() if settings.tf32 else ("TF32",),
        workspace_bytes=settings.workspace_mb << 20 if settings.workspace_mb else None,
        optimization_level=settings.optimization_level, hardware_compatibility=level,
        version_compatible=settings.version_compatible,
        profiles=shape_profiles(inputs, settings, overrides),
        timing_cache_file=timing_cache_name(version, device) if settings.timing_cache and device else None,
        notes=tuple(notes),
    )


def _engine_precision(model_precision: str, requested: str) -> str:
    if requested == "int8" and model_precision != "int8":
        raise InvalidInputError(
            "TensorRT int8 needs an explicit-quantization (Q/DQ) ONNX; this model has no Q/DQ nodes",
            hint="edgekit quantize MODEL.onnx --target tensorrt --calib DATA, then compile its output")
    if requested == "fp16" and model_precision == "fp32":
        raise InvalidInputError("an fp16 engine is built from an fp16 ONNX", hint="compile converts it: --precision fp16")
    return model_precision  # fp32 requested on a Q/DQ or fp16 ONNX builds what the ONNX says


def shape_profiles(inputs: list[TensorSpec], settings: BuildSettings,
                   overrides: tuple[TensorSpec, ...] = ()) -> tuple[ShapeRange, ...]:
    """min/opt/max per input when any input has a dynamic axis; () for a fully static model."""
    if not any(None in s.shape for s in inputs) and not settings.shapes:
        return ()
    by_name = {s.name: s for s in overrides}
    unknown = (set(settings.shapes) | set(by_name)) - {s.name for s in inputs}
    if unknown:
        raise InvalidInputError(f"shape given for '{sorted(unknown)[0]}', which the model does not have",
                                hint="model inputs: " + ", ".join(s.name for s in inputs))
    ranges = []
    for spec in inputs:
        if spec.name in settings.shapes:
            lo, opt, hi = _parse_range(spec, settings.shapes[spec.name])
        elif spec.name in by_name and None not in by_name[spec.name].shape:
            lo = opt = hi = _check_fits(spec, by_name[spec.name].shape)
        else:
            lo, opt, hi = _batch_range(spec, settings)
        ranges.append(ShapeRange(spec.name, lo, opt, hi))
    return tuple(ranges)


def _batch_range(spec: TensorSpec, settings: BuildSettings):
    for axis, d in enumerate(spec.shape):
        if d is None and axis != 0:
            raise InvalidInputError(
                f"input '{spec.name}' has a dynamic axis {axis} ({spec.display_shape()}): TensorRT needs its range",
                hint=f"--input {spec.name}:<concrete dims>, or shapes = {{ {spec.name} = \"MIN,OPT,MAX\" }} in the profile")
    hi_batch = settings.max_batch or 1
    opt_batch = settings.opt_batch or hi_batch
    if opt_batch > hi_batch:
        raise InvalidInputError(f"tensorrt option opt_batch = {opt_batch} > max_batch = {hi_batch}")

    def with_batch(b):
        return tuple(b if d is None else d for d in spec.shape)

    return with_batch(1), with_batch(opt_batch), with_batch(hi_batch)


def _parse_range(spec: TensorSpec, text) -> tuple[tuple[int, ...], ...]:
    parts = str(text).split(",")
    if len(parts) != 3:
        raise InvalidInputError(f"shapes.{spec.name} = '{text}'", hint="three shapes MIN,OPT,MAX like 1x3x224x224,4x3x224x224,8x3x224x224")
    shapes = []
    for part in parts:
        dims = part.strip().split("x")
        if not all(d.isdigit() and int(d) > 0 for d in dims):
            raise InvalidInputError(f"shapes.{spec.name}: bad shape '{part}'", hint="positive integers joined by x")
        shapes.append(_check_fits(spec, tuple(int(d) for d in dims)))
    lo, opt, hi = shapes
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise InvalidInputError(f"shapes.{spec.name} = '{text}' is not ordered min <= opt <= max on every axis")
    return lo, opt, hi


def _check_fits(spec: TensorSpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    if not spec.accepts(shape):
        raise InvalidInputError(f"shape {'x'.join(map(str, shape))} does not fit input '{spec.name}' ({spec.display_shape()})")
    return tuple(shape)


def timing_cache_name(version: TrtVersion, device: DeviceFacts) -> str:
    """Timing caches are only valid for one GPU model and TensorRT version: one file per pair."""
    gpu = re.sub(r"[^a-z0-9]+", "-", device.name.lower()).strip("-") or "gpu"
    return f"timing-trt{version}-sm{device.sm[0]}{device.sm[1]}-{gpu}.cache"


# --- can this engine load here? -----------------------------------------------------------------

def check_engine_compatible(built: dict, version: TrtVersion, device: DeviceFacts) -> list[str]:
    """Refuse an engine built for another TensorRT or GPU (engines are not portable); return warnings.

    `built` is the "tensorrt" block of the engine's sidecar.
    """
    rebuild = ("rebuild it on this device: edgekit compile MODEL.onnx --target tensorrt "
               "(engines are not portable; Jetson engines are built on the Jetson)")
    warnings: list[str] = []
    built_version = TrtVersion.parse(built["version"])
    if built.get("version_compatible"):
        if built_version.major != version.major or version < built_version:
            raise TargetUnavailableError(
                f"engine built with TensorRT {built_version} (version compatible) cannot load on TensorRT {version}: "
                "only later releases of the same major version can", hint=rebuild)
    elif built_version != version:
        raise TargetUnavailableError(f"engine built with TensorRT {built_version}, this is TensorRT {version}", hint=rebuild)
    built_sm = DeviceFacts(built.get("gpu", "?"), built["compute_capability"]).sm
    level = built.get("hardware_compatibility")
    if level == "AMPERE_PLUS":
        if device.sm < (8, 0):
            raise TargetUnavailableError(
                f"engine built for Ampere or newer GPUs, this is {device.name} (sm_{device.sm[0]}{device.sm[1]})", hint=rebuild)
    elif built_sm != device.sm:
        raise TargetUnavailableError(
            f"engine built for compute capability {built['compute_capability']} ({built.get('gpu', '?')}), "
            f"this GPU is {device.name} ({device.compute_capability})", hint=rebuild)
    elif level != "SAME_COMPUTE_CAPABILITY" and built.get("gpu") and built["gpu"] != device.name:
        warnings.append(f"engine built on {built['gpu']}, running on {device.name} (same compute capability): "
                        "it loads, but tactics were timed on the other GPU; rebuild for best latency")
    return warnings
