"""What a command is given, as the objects the stages take: a path or an Artifact, a profile name or a
Profile, a data path or a data source, "input:1x3x224x224" or a TensorSpec, and the keyword options
of a call checked against the command's options (edgekit.api)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from edgekit.core import runlog
from edgekit.core.artifact import Artifact
from edgekit.core.errors import InvalidInputError
from edgekit.core.profiles import Profile
from edgekit.core.tensors import TensorSpec
from edgekit.remote.fleet import DeviceArgs


def keyword_options(cls, command: str, given: dict):
    """The frozen dataclass `cls` of a command's options from its keyword arguments."""
    known = fields(cls)
    unknown = sorted(set(given) - {f.name for f in known})
    if unknown:
        raise TypeError(f"{command}() got an unexpected keyword argument '{unknown[0]}'")
    missing = [f.name for f in known if f.name not in given and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise TypeError(f"{command}() missing required keyword argument '{missing[0]}'")
    return cls(**given)


def check_choice(option: str, value, choices: tuple[str, ...]) -> None:
    """The check click makes of a Choice option, for calls that do not come through the command line."""
    if value not in choices:
        raise InvalidInputError(f"invalid value for '--{option}': '{value}' is not one of "
                                + ", ".join(f"'{c}'" for c in choices))


def as_tuple(values) -> tuple:
    """A repeated option's values: one value (a string, a Profile) or several."""
    if values is None:
        return ()
    if isinstance(values, (str, Path, Profile, TensorSpec)):
        return (values,)
    return tuple(values)


def as_model_spec(model) -> str | None:
    """MODEL as deploy names it: a file, or a PyTorch factory (file.py:fn, pkg.module:fn)."""
    if isinstance(model, Artifact):
        return str(model.path)
    return None if model is None else str(model)


def as_output_folder(path) -> Path:
    """The output folder, refused when a file already has its name (before any work)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"output folder '{out}' is an existing file", hint="give a folder path with -o")
    runlog.set_folder(out)  # the libraries' output is kept there (edgekit.log)
    return out


def as_artifact(model) -> Artifact:
    return model if isinstance(model, Artifact) else Artifact.load(model)


def as_profile(profile) -> Profile | None:
    """A built-in profile name, a TOML path or a Profile; None stays None."""
    if profile is None or isinstance(profile, Profile):
        return profile
    from edgekit.backends.registry import load_profile

    return load_profile(str(profile))


def as_specs(inputs) -> tuple[TensorSpec, ...]:
    """Input specs from "NAME:DIMS[:DTYPE]" strings or TensorSpecs."""
    from edgekit.core.tensors import parse_input_spec

    return tuple(s if isinstance(s, TensorSpec) else parse_input_spec(s) for s in as_tuple(inputs))


def as_preprocess(preprocess):
    """A preprocessing spec string ("imagenet,size=256") or a Preprocess; None stays None."""
    from edgekit.core.data import Preprocess, parse_preprocess

    if preprocess is None or isinstance(preprocess, Preprocess):
        return preprocess
    return parse_preprocess(preprocess, base=None) if preprocess else None


def as_data(data, specs, preprocess=None, labels=None, limit=None, consts=()):
    """A data path (.npy, .npz, image folder) opened for these inputs, or a data source as it is;
    `consts` ("NAME=VALUE" or a {name: value} dict) are fed with every sample."""
    if data is None:
        return None
    if not isinstance(data, (str, Path)):
        return data
    from edgekit.core.arrays import parse_consts
    from edgekit.core.data import open_data
    from edgekit.stages.task_choice import is_detection_labels

    consts = consts if isinstance(consts, dict) else parse_consts(as_tuple(consts))
    # detection labels (a YOLO folder, a COCO json) are the detect task's ground truth, not per-image classes
    return open_data(data, specs, preprocess, None if is_detection_labels(labels) else labels, limit, consts)


def resolve_inputs(model_inputs: list[TensorSpec], overrides: tuple[TensorSpec, ...]) -> list[TensorSpec]:
    """The model's inputs with `--input` overrides applied by name."""
    by_name = {s.name: s for s in overrides}
    unknown = set(by_name) - {s.name for s in model_inputs}
    if unknown:
        raise InvalidInputError(
            f"--input names '{sorted(unknown)[0]}', which the model does not have",
            hint="model inputs: " + ", ".join(s.name for s in model_inputs),
        )
    return [by_name.get(s.name, s) for s in model_inputs]


def merge_inputs(model_inputs, overrides) -> list[TensorSpec]:
    """The inputs data is read for: the model's (with overrides), else the overrides alone."""
    return resolve_inputs(list(model_inputs), tuple(overrides)) if model_inputs else list(overrides)


def is_onnx_model(model) -> bool:
    if isinstance(model, Artifact):
        return model.format == "onnx"
    return Path(model).suffix == ".onnx"


def load_source(model, specs, out_dir: Path) -> Artifact:
    """MODEL as an Artifact; a PyTorch factory (file.py:fn, pkg.module:fn) is first saved as OUT/model.pt2."""
    from edgekit.core.torch_model import is_pytorch_spec

    if isinstance(model, Artifact):
        return model
    model = str(model)
    if not is_pytorch_spec(model) or Path(model).suffix == ".pt2":
        return Artifact.load(model)
    from edgekit.core.torch_model import load_torch_model
    from edgekit.stages.export import save_pt2

    if not specs:
        raise InvalidInputError("a PyTorch model needs its inputs", hint="--input input:1x3x224x224")
    return save_pt2(load_torch_model(model), out_dir / "model.pt2", specs)


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """How a command reads data: --input specs (strings or TensorSpecs), --preprocess, --labels."""

    inputs: tuple = ()
    preprocess: object = None  # a spec string or a Preprocess
    labels: str | None = None
    consts: tuple = ()  # "NAME=VALUE": inputs every sample shares, given once


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """--task and --masks: the task accuracy is judged in (default: guessed from the FP32 outputs)."""

    task: str | None = None  # classify | detect | segment | embed | generic | pkg.mod:fn
    masks: str | None = None  # class-id masks folder (segment)

    def task_choice(self, labels=None, task: str | None = None):
        """The TaskChoice of these options (`task`: a default from a profile or config when --task is not given)."""
        from edgekit.stages.task_choice import TaskChoice, load_task

        spec = self.task or task
        load_task(spec)  # an unknown task or a callable that does not import: exit 2 before any work
        return TaskChoice(spec, labels, self.masks)


@dataclass(frozen=True, kw_only=True)
class DeviceOptions:
    """The --device options of a command that can run on devices (none given: it runs on this host)."""

    devices: tuple = ()  # ssh://USER@HOST[:PORT] URLs or profiles with a [connection]
    devices_file: str | None = None
    accept_new_host_key: bool = False
    device_timeout: float = 600.0

    def device_args(self) -> DeviceArgs:
        return DeviceArgs(as_tuple(self.devices), self.devices_file, self.accept_new_host_key, self.device_timeout)
