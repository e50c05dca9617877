"""Per-layer int8 error of an int8 artifact against its float reference (`edgekit inspect-quant`).

The target whose runner loads the artifact's format reads it (Backend.inspect_layers): a Q/DQ
ONNX is tapped in ONNX Runtime against the FP32 ONNX (edgekit.onnx.sensitivity), an OpenVINO
IR in OpenVINO, a .tflite against its float .tflite in LiteRT.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.backends.registry import get_backend, target_for_format
from edgekit.core.artifact import Artifact
from edgekit.core.errors import InvalidInputError
from edgekit.onnx.sensitivity import LayerError


def inspect_artifact(artifact: Artifact, reference: Path, data, max_samples: int = 32) -> list[LayerError]:
    backend = get_backend(target_for_format(artifact.format))
    if artifact.format not in backend.inspectable_formats:
        raise InvalidInputError(
            f"inspect-quant does not read {artifact.format} artifacts",
            hint="inspect the Q/DQ ONNX (onnxruntime/tensorrt), OpenVINO IR or .tflite int8 of the same model",
        )
    return backend.inspect_layers(artifact, reference, data, max_samples)
