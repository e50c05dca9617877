"""Tensor specs: `--input NAME:DIMS[:DTYPE][@batch=K]` parsing and the model-input contract.

`batch_axis` is the axis data files enumerate samples along: 0 for images and most inputs, 1 for a
recurrent state laid out 2xBx128, None for an input every sample shares (a scalar sample rate, given
once in the data or with `--const`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edgekit.core.errors import InvalidInputError

DTYPES = {"float32", "float16", "int64", "int32", "int8", "uint8", "bool"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | None, ...]  # None = dynamic axis
    dtype: str = "float32"
    batch_axis: int | None = 0  # the axis samples are stacked along in data files; None: shared by all

    def __post_init__(self):
        if not self.shape and self.batch_axis is not None:  # a scalar has no axis to stack samples on
            object.__setattr__(self, "batch_axis", None)

    def to_dict(self) -> dict:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        return d if self.batch_axis == 0 else {**d, "batch_axis": self.batch_axis}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], tuple(d["shape"]), d.get("dtype", "float32"), d.get("batch_axis", 0))

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Shape with dynamic axes filled: the batch axis with `batch`, others must be static."""
        dims = []
        for i, d in enumerate(self.shape):
            if d is None:
                if i != self.batch_axis:
                    sizes = ["1" if j == self.batch_axis else "SIZE" if e is None else str(e)
                             for j, e in enumerate(self.shape)]
                    raise InvalidInputError(
                        f"input '{self.name}' has a dynamic axis {i} in {self.display_shape()}",
                        hint=f"give each axis but the batch its size: --input {self.name}:{'x'.join(sizes)}",
                    )
                d = batch
            dims.append(d)
        return tuple(dims)

    def with_batch(self, batch: int | None) -> "TensorSpec":
        if self.batch_axis is None:
            return self
        shape = list(self.shape)
        shape[self.batch_axis] = batch
        return replace(self, shape=tuple(shape))

    def display_shape(self) -> str:
        if not self.shape:
            return "scalar"
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return dims if self.batch_axis in (0, None) else f"{dims}@batch={self.batch_axis}"

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape)
        )


def parse_input_spec(text: str) -> TensorSpec:
    """NAME:DIMS[:DTYPE][@batch=K]: DIMS like 1x3x224x224 with `?` for a dynamic axis, or `scalar`;
    `@batch=K` the axis data files stack samples along (default 0), `@batch=none` for a shared input."""
    body, _, batch_text = text.partition("@")
    parts = body.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise InvalidInputError(
            f"bad --input '{text}'", hint="use NAME:DIMS[:DTYPE][@batch=K], e.g. input:1x3x224x224 or sr:scalar:int64"
        )
    name, dims_text = parts[0], parts[1]
    dtype = parts[2] if len(parts) == 3 else "float32"
    if dtype not in DTYPES:
        raise InvalidInputError(f"bad dtype '{dtype}' in --input '{text}'", hint=f"one of {sorted(DTYPES)}")
    dims: list[int | None] = []
    for d in ([] if dims_text == "scalar" else dims_text.split("x")):
        if d == "?":
            dims.append(None)
        elif d.isdigit() and int(d) > 0:
            dims.append(int(d))
        else:
            raise InvalidInputError(
                f"bad dimension '{d}' in --input '{text}'", hint="dims are positive integers or ?, or the word scalar"
            )
    return TensorSpec(name, tuple(dims), dtype, _batch_axis(batch_text, len(dims), text))


def _batch_axis(text: str, rank: int, spec: str) -> int | None:
    if not text:
        return 0
    key, _, value = text.partition("=")
    if key != "batch" or not (value == "none" or value.isdigit()):
        raise InvalidInputError(f"bad '@{text}' in --input '{spec}'", hint="@batch=K (an axis) or @batch=none")
    if value == "none":
        return None
    if int(value) >= max(rank, 1):
        raise InvalidInputError(f"--input '{spec}': batch axis {value} is not an axis of a rank-{rank} input")
    return int(value)


def random_feed(specs: list[TensorSpec], batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random inputs; int inputs get small non-negative ids."""
    rng = np.random.default_rng(seed)
    feed = {}
    for s in specs:
        shape = s.concrete_shape(batch)
        if s.dtype.startswith("float"):
            feed[s.name] = rng.standard_normal(shape).astype(s.dtype)
        elif s.dtype == "bool":
            feed[s.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feed[s.name] = rng.integers(0, 100, shape).astype(s.dtype)
    return feed
