"""Shared fixtures: tiny models exported once per session, real data files, a CLI runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))  # `models` for factories given as file.py:factory

from models import tiny_cnn, two_input  # noqa: E402

from edgekit.core.tensors import parse_input_spec  # noqa: E402
from edgekit.stages.export import ExportOptions, export_onnx  # noqa: E402

TINY_INPUT = "input:1x3x32x32"
MODELS_FILE = Path(__file__).parent / "models.py"


def pytest_collection_modifyitems(config, items):
    """GPU tests need TensorRT + an NVIDIA GPU; skip them cleanly where there is none."""
    try:
        import tensorrt  # noqa: F401

        has_trt = os.path.exists("/dev/nvidia0")
    except ImportError:
        has_trt = False
    if not has_trt:
        skip = pytest.mark.skip(reason="needs TensorRT and an NVIDIA GPU")
        for item in items:
            if "tensorrt" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export_onnx(tiny_cnn(), out, ExportOptions(inputs=(parse_input_spec(TINY_INPUT),)), source_name="tiny_cnn")
    return out


@pytest.fixture(scope="session")
def two_input_onnx(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two") / "two.onnx"
    specs = (parse_input_spec("image:1x3x16x16"), parse_input_spec("aux:1x4"))
    export_onnx(two_input(), out, ExportOptions(inputs=specs), source_name="two_input")
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """64 samples for the tiny CNN, with structure (smooth images), not just noise."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((64, 3, 4, 4)).astype(np.float32)
    images = np.kron(base, np.ones((1, 1, 8, 8), np.float32)) + 0.1 * rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "tiny.npy"
    np.save(path, images.astype(np.float32))
    return path


@pytest.fixture(scope="session")
def two_input_data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("data2") / "two.npz"
    np.savez(path, image=rng.standard_normal((16, 3, 16, 16)).astype(np.float32),
             aux=rng.standard_normal((16, 4)).astype(np.float32))
    return path


@pytest.fixture(scope="session")  # module fixtures that build artifacts through the CLI use it too
def cli():
    from edgekit.cli.main import main

    runner = CliRunner()

    def invoke(*args, **kwargs):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke
