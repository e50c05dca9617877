"""Samples from arrays: an .npy for a one-input model, an .npz with a key per input, and the inputs every
sample shares (`--const`). Each input's samples are stacked along its batch axis (TensorSpec.batch_axis)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.core.errors import InvalidInputError
from edgekit.core.geometry import ImageGeometry
from edgekit.core.tensors import TensorSpec

LABEL_KEY = "labels"  # reserved key in an .npz


@dataclass
class Sample:
    feed: dict[str, np.ndarray]
    label: int | None = None
    name: str = ""
    geometry: ImageGeometry | None = None  # image samples: how the file was resized/cropped/padded


def parse_consts(items) -> dict[str, str]:
    """`--const sr=16000` (repeatable) as {name: value text}; the value is read with the input's dtype."""
    out = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        if not sep or not name or not value:
            raise InvalidInputError(f"bad --const '{item}'", hint="use NAME=VALUE, e.g. --const sr=16000")
        out[name] = value
    return out


def constant_feed(inputs: list[TensorSpec], consts: dict) -> dict[str, np.ndarray]:
    """Each constant as an array of its input's dtype and shape (a scalar, or VALUE,VALUE,... filling it)."""
    specs = {s.name: s for s in inputs}
    feed = {}
    for name, value in consts.items():
        spec = specs.get(name)
        if spec is None:
            raise InvalidInputError(f"--const names '{name}', which the model does not have",
                                    hint="model inputs: " + ", ".join(specs))
        try:
            values = np.asarray(value if isinstance(value, np.ndarray) else
                                [float(v) for v in str(value).split(",")], np.float64)
        except ValueError as e:
            raise InvalidInputError(f"--const {name}={value}: not a number") from e
        shape = spec.concrete_shape(1)
        if values.size != int(np.prod(shape)):
            raise InvalidInputError(f"--const {name}: {values.size} values for input '{name}' of shape "
                                    f"{spec.display_shape()}")
        feed[name] = values.reshape(shape).astype(spec.dtype)
    return feed


class NpyReader:
    """One array for the single model input; axis 0 enumerates samples."""

    has_labels = False

    def __init__(self, path: Path, inputs: list[TensorSpec]):
        if len(inputs) != 1:
            raise InvalidInputError(
                f"{path} is one array but the model has {len(inputs)} inputs",
                hint="use an .npz with one key per input: " + ", ".join(s.name for s in inputs),
            )
        self.name = inputs[0].name
        self.rank = len(inputs[0].shape)
        self.array = load_array(path, mmap=True)
        if self.array.ndim not in (self.rank, self.rank - 1):
            raise InvalidInputError(
                f"input '{self.name}': {path} has shape {'x'.join(map(str, self.array.shape))}, "
                f"the model expects {inputs[0].display_shape()} per sample"
            )

    def __len__(self) -> int:
        return 1 if self.array.ndim == self.rank - 1 else self.array.shape[0]

    def __iter__(self):
        if self.array.ndim == self.rank - 1:
            yield Sample({self.name: np.asarray(self.array)[None]}, name="0")
            return
        for i in range(len(self)):
            yield Sample({self.name: np.asarray(self.array[i : i + 1])}, name=str(i))


class NpzReader:
    """Keys = input names, samples stacked along each input's batch axis (0 unless `@batch=K`); an input
    shared by every sample (`@batch=none`, a scalar) is stored once, or once per sample; optional `labels`."""

    def __init__(self, path: Path, inputs: list[TensorSpec]):
        try:
            self.archive = np.load(path, allow_pickle=False)
            keys = set(self.archive.files)
        except Exception as e:
            raise InvalidInputError(f"{path} is not a readable .npz ({e})") from e
        missing = [s.name for s in inputs if s.name not in keys]
        if missing:
            raise InvalidInputError(
                f"data {path} has no input '{missing[0]}' (keys: {sorted(keys)})",
                hint="name .npz keys after the model inputs, or give a shared one with --const NAME=VALUE",
            )
        self.inputs = inputs
        self.arrays = {s.name: self.archive[s.name] for s in inputs}
        self.stacked = {s.name: stack_axis(s, self.arrays[s.name], path) for s in inputs}
        counts = {self.arrays[k].shape[axis] for k, axis in self.stacked.items() if axis is not None}
        if len(counts) > 1:
            raise InvalidInputError(f"{path}: inputs have different sample counts {sorted(counts)}",
                                    hint="for an input stacked on another axis: --input NAME:DIMS@batch=K")
        self.count = counts.pop() if counts else 1
        self.labels = self.archive[LABEL_KEY] if LABEL_KEY in keys else None
        self.has_labels = self.labels is not None

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        for i in range(self.count):
            feed = {}
            for spec in self.inputs:
                a, axis = self.arrays[spec.name], self.stacked[spec.name]
                if axis is None:  # one value for every sample
                    feed[spec.name] = np.asarray(a)
                elif spec.batch_axis is None:  # one shared-kind value per sample: no batch axis of its own
                    feed[spec.name] = np.asarray(a[i])
                else:
                    feed[spec.name] = np.take(a, [i], axis=axis)
            label = int(self.labels[i]) if self.labels is not None else None
            yield Sample(feed, label, str(i))


def stack_axis(spec: TensorSpec, array: np.ndarray, path: Path) -> int | None:
    """The axis of `array` that enumerates samples, None when the array is one value for all of them."""
    rank = len(spec.shape)
    if spec.batch_axis is None:
        if array.ndim == rank + 1:
            return 0
        if array.ndim == rank:
            return None
    elif array.ndim == rank:
        return spec.batch_axis
    raise InvalidInputError(
        f"input '{spec.name}': {path} holds shape {'x'.join(map(str, array.shape)) or 'scalar'}, "
        f"the model expects {spec.display_shape()} per sample",
        hint="stack samples along the input's batch axis (--input NAME:DIMS@batch=K), or store a shared value once",
    )


def load_array(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as e:
        raise InvalidInputError(f"{path} is not a readable .npy ({e})") from e
