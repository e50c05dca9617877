"""Tensor specs: `--input NAME:DIMS[:DTYPE]` parsing and the model-input contract."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.core.errors import InvalidInputError

DTYPES = {"float32", "float16", "int64", "int32", "int8", "uint8", "bool"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | None, ...]  # None = dynamic axis
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], tuple(d["shape"]), d.get("dtype", "float32"))

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Shape with dynamic axes filled: the first with `batch`, others must be static."""
        dims = []
        for i, d in enumerate(self.shape):
            if d is None:
                if i != 0:
                    raise InvalidInputError(
                        f"input '{self.name}' has a dynamic axis {i} in {self.display_shape()}",
                        hint=f"give a concrete shape: --input {self.name}:1x3x224x224",
                    )
                d = batch
            dims.append(d)
        return tuple(dims)

    def with_batch(self, batch: int | None) -> "TensorSpec":
        return TensorSpec(self.name, (batch, *self.shape[1:]), self.dtype) if self.shape else self

    def display_shape(self) -> str:
        return "x".join("?" if d is None else str(d) for d in self.shape)

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape)
        )


def parse_input_spec(text: str) -> TensorSpec:
    """Parse NAME:DIMS[:DTYPE], DIMS like 1x3x224x224 with `?` for a dynamic axis."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise InvalidInputError(
            f"bad --input '{text}'", hint="use NAME:DIMS[:DTYPE], e.g. input:1x3x224x224"
        )
    name, dims_text = parts[0], parts[1]
    dtype = parts[2] if len(parts) == 3 else "float32"
    if dtype not in DTYPES:
        raise InvalidInputError(f"bad dtype '{dtype}' in --input '{text}'", hint=f"one of {sorted(DTYPES)}")
    dims: list[int | None] = []
    for d in dims_text.split("x"):
        if d == "?":
            dims.append(None)
        elif d.isdigit() and int(d) > 0:
            dims.append(int(d))
        else:
            raise InvalidInputError(
                f"bad dimension '{d}' in --input '{text}'", hint="dims are positive integers or ?"
            )
    return TensorSpec(name, tuple(dims), dtype)


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
