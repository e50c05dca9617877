"""What one sweep is asked: the grid (pruning x precision x calibration method x profile) and how to run it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.core.errors import InvalidInputError
from edgekit.pipeline.arguments import DataOptions, TaskOptions, as_tuple, check_choice
from edgekit.pipeline.compile import PRECISIONS
from edgekit.pipeline.quantize import METHODS


@dataclass(frozen=True, kw_only=True)
class SweepRequest(DataOptions, TaskOptions):
    """The options of `edgekit sweep`, named as its long options; any may also come from `[sweep]` of `config`."""

    config: str | None = None
    profiles: tuple = ()  # names, TOML paths or Profiles
    prune: tuple | None = None  # ratios; default (0,): no pruning
    precisions: tuple | None = None  # default fp32, int8
    calib_methods: tuple | None = None  # int8 calibration methods; default minmax
    calib: str | None = None
    val: str | None = None  # default: the calibration data
    val_limit: int | None = None
    distill: str | None = None  # pruned points: distil on this data (else BatchNorm re-estimation only)
    search: bool = False  # int8 that misses its budget: the accuracy-aware search
    accuracy_budget: float | None = None
    min_seconds: float = 1.0
    weights: str | None = None
    trust_pickle: bool = False
    ray: str | None = None  # an existing cluster's address; default: a local Ray for the sweep
    in_process: bool = False  # no Ray even when it is installed
    workers: int | None = None  # parallel points (local Ray's num_cpus); default: the machine's cores
    resume: str | None = None  # an earlier sweep's output folder: its settings, its finished points kept
    output: str | None = None


@dataclass(frozen=True)
class Grid:
    """The settings every point is one combination of."""

    prune: tuple[float, ...]
    precisions: tuple[str, ...]
    calib_methods: tuple[str, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def as_grid(request: SweepRequest) -> Grid:
    """The grid, checked before any work: an empty axis or an unknown value is exit 2."""
    prune = tuple(_ratio(r) for r in _axis("prune", request.prune, ("0",)))
    precisions = _axis("precision", request.precisions, ("fp32", "int8"))
    methods = _axis("calib-methods", request.calib_methods, ("minmax",))
    for ratio in prune:
        if not 0.0 <= ratio < 1.0:
            raise InvalidInputError(f"--prune {ratio}: a ratio is in [0, 1)", hint="--prune 0,0.25,0.5")
    for p in precisions:
        check_choice("precision", p, PRECISIONS)
    for m in methods:
        check_choice("calib-methods", m, METHODS)
    if len(set(prune)) != len(prune) or len(set(precisions)) != len(precisions) or len(set(methods)) != len(methods):
        raise InvalidInputError("the grid names a value twice", hint="give each ratio, precision and method once")
    return Grid(tuple(sorted(prune)), precisions, methods)


def _axis(option: str, values, default: tuple[str, ...]) -> tuple[str, ...]:
    """An axis given (even as nothing) is the user's; one not given takes its default."""
    if values is None:
        return default
    got = tuple(as_list(values))
    if not got:
        raise InvalidInputError(f"the grid is empty: --{option} names no value", hint=f"--{option} " + ",".join(default))
    return got


def _ratio(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(f"--prune '{text}' is not a number", hint="--prune 0,0.25,0.5") from None


def as_list(values) -> list[str]:
    """A grid axis as given: "0,0.25,0.5", ["0", "0.25"], (0.0, 0.5), repeated options of comma lists."""
    out: list[str] = []
    for v in as_tuple(values):
        if isinstance(v, (int, float)):
            out.append(str(v))
            continue
        parts = [s.strip() for s in str(v).split(",")]
        if not any(parts):  # "" names nothing: an empty axis, which the caller reports
            continue
        if any(not s for s in parts):
            raise InvalidInputError(f"an empty value in the grid: '{v}'", hint="--precision fp32,int8")
        out += parts
    return out


def check_request(request: SweepRequest) -> None:
    """What must hold before any work: a model, profiles, data, an output folder."""
    if not request.profiles:
        raise InvalidInputError("the grid is empty: no device profile given", hint="pass --profile NAME (repeatable)")
    if request.calib is None and request.val is None:
        raise InvalidInputError("a sweep needs data to validate on", hint="pass --calib DATA and --val DATA")
    if request.output is None:
        raise InvalidInputError("no output folder given", hint="pass -o DIR")
    if request.ray and request.in_process:
        raise InvalidInputError("--ray and --in-process exclude each other")
    if request.workers is not None and request.workers < 1:
        raise InvalidInputError(f"--workers {request.workers}: at least 1")


def output_folder(request: SweepRequest) -> Path:
    return Path(request.output)
