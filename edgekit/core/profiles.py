"""Device profiles: built-ins from `targets/*.toml`, or a user file. Unknown keys are errors."""

from __future__ import annotations

import platform
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from edgekit.core.errors import InvalidInputError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Hardware:
    arch: str = "x86_64"
    cpu_cores: int | None = None
    memory_mb: int | None = None
    accelerator: str | None = None
    generic: bool = False  # any machine of this arch (so the host is the real thing)
    emulated_cpu: str | None = None  # the qemu CPU model of `edgekit device emulate --profile` (cortex-a76)


@dataclass(frozen=True)
class Runtime:
    target: str = "onnxruntime"
    precision: str = "int8"
    threads: int | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Budgets:
    latency_p90_ms: float | None = None
    max_model_mb: float | None = None
    max_accuracy_drop: float | None = None  # points of task metric / top-1 agreement
    min_top1_agreement: float | None = None
    min_cosine: float | None = None  # mean logit cosine vs FP32 (0..1)
    min_task_metric: float | None = None  # the task metric's value (0..1: mAP@0.5, mIoU, top-1, nn agreement)
    min_output_cosine: float | None = None  # every output's mean cosine vs FP32 (0..1)

    def accuracy_keys(self) -> tuple:
        """The budgets judged on accuracy (any of them set starts the int8 search)."""
        return (self.max_accuracy_drop, self.min_top1_agreement, self.min_cosine, self.min_task_metric,
                self.min_output_cosine)


@dataclass(frozen=True)
class Connection:
    host: str
    user: str | None = None
    port: int | None = None
    python: str = "python3"
    workdir: str | None = None
    identity_file: str | None = None
    ssh_options: list = field(default_factory=list)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""
    hardware: Hardware = field(default_factory=Hardware)
    runtime: Runtime = field(default_factory=Runtime)
    budgets: Budgets = field(default_factory=Budgets)
    connection: Connection | None = None
    source: str = ""
    task: str | None = None  # the task accuracy is judged in (edgekit.tasks); None: guessed from the outputs

    def where(self) -> str:
        """Where a local measurement really ran, as the report says it."""
        if self.hardware.generic and self.hardware.arch in (host_arch(), "host"):
            return "host"
        return f"host (standing in for {self.name})"

    def threads(self) -> int | None:
        return self.runtime.threads


SECTIONS = {"hardware": Hardware, "runtime": Runtime, "budgets": Budgets, "connection": Connection}
TOP_LEVEL = {"name", "description", "task", *SECTIONS}


def host_arch() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def builtin_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    # wheel: edgekit/targets; source checkout / editable install: ../targets
    return [d for d in (here.parent / "targets", here.parent.parent / "targets") if d.is_dir()]


def builtin_names() -> list[str]:
    names = set()
    for d in builtin_dirs():
        names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def read_profile(name_or_path: str) -> Profile:
    """A built-in name (`raspberry-pi-5`) or a path to a TOML file, its target not yet checked
    (edgekit.backends.registry.load_profile checks it against the registered targets)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise InvalidInputError(f"profile file not found: {path}")
        return parse_profile(path.read_text(), str(path), default_name=path.stem)
    for d in builtin_dirs():
        candidate = d / f"{name_or_path}.toml"
        if candidate.exists():
            return parse_profile(candidate.read_text(), str(candidate), default_name=name_or_path)
    raise InvalidInputError(
        f"unknown profile '{name_or_path}'", hint="built-in profiles: " + ", ".join(builtin_names())
    )


def parse_profile(text: str, source: str, default_name: str = "") -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidInputError(f"{source}: invalid TOML ({e})") from e
    return profile_from_dict(data, source, default_name)


def profile_from_dict(data: dict, source: str, default_name: str = "") -> Profile:
    for key in data:
        if key not in TOP_LEVEL:
            raise InvalidInputError(
                f"unknown profile key '{key}' in {source}", hint=f"allowed: {', '.join(sorted(TOP_LEVEL))}"
            )
    sections = {}
    for key, cls in SECTIONS.items():
        if key not in data:
            continue
        if not isinstance(data[key], dict):
            raise InvalidInputError(f"'{key}' in {source} must be a table [{key}]")
        sections[key] = _build(cls, data[key], f"{key}", source)
    if "task" in data and not isinstance(data["task"], str):
        raise InvalidInputError(f"profile key 'task' in {source} has a bad value {data['task']!r} (str)")
    profile = Profile(
        name=str(data.get("name", default_name)), description=str(data.get("description", "")),
        source=source, task=data.get("task"), **sections,
    )
    if profile.runtime.precision not in PRECISIONS:
        raise InvalidInputError(
            f"runtime.precision = '{profile.runtime.precision}' in {source}", hint=f"one of {', '.join(PRECISIONS)}"
        )
    if profile.runtime.threads is not None and profile.runtime.threads < 1:
        raise InvalidInputError(f"runtime.threads = {profile.runtime.threads} in {source}",
                                hint="a positive thread count, or leave it out for the runtime's default")
    return profile




def _build(cls, values: dict, section: str, source: str):
    known = {f.name: f for f in fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise InvalidInputError(
                f"unknown profile key '{section}.{key}' in {source}",
                hint=f"allowed in [{section}]: {', '.join(known)}",
            )
        expected = known[key].type
        if not _type_ok(value, expected):
            raise InvalidInputError(f"profile key '{section}.{key}' in {source} has a bad value {value!r} ({expected})")
    if cls is Connection and "host" not in values:
        raise InvalidInputError(f"[connection] in {source} needs a host")
    return cls(**values)


def _type_ok(value, annotation: str) -> bool:
    checks = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict": dict, "list": list}
    for name, typ in checks.items():
        if annotation.startswith(name):
            if isinstance(value, bool) and name in ("int", "float"):
                return False
            return isinstance(value, typ)
    return True
