"""The Backend and Runner interfaces every target implements (see DESIGN.md)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.core.artifact import Artifact
from edgekit.core.tensors import TensorSpec


@dataclass(frozen=True)
class QuantOptions:
    """Target-independent int8 settings; `extra` carries target-specific ones."""

    method: str = "minmax"  # minmax | entropy | percentile
    per_channel: bool = True
    max_samples: int = 300
    exclude: tuple[str, ...] = ()  # node names / op types kept in float
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CompileOptions:
    precision: str = "fp32"
    inputs: tuple[TensorSpec, ...] = ()  # shape overrides
    extra: dict = field(default_factory=dict)


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


class Backend(abc.ABC):
    name: str
    # format of the file this target deploys (the output of compile)
    deploy_format: str

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
