"""A small image classifier to copy from: a factory edgekit can call (`model.py:make_model`).

    edgekit export examples/pytorch/model.py:make_model --input input:1x3x64x64 -o model.onnx
    edgekit deploy examples/pytorch/model.py:make_model --input input:1x3x64x64 \
        --profile local --calib calib.npy -o out/

Pass trained weights with --weights model.safetensors (or a state dict .pt).
"""

import torch
from torch import nn


class SmallNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())

        self.features = nn.Sequential(block(3, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2), block(64, 128))
        self.classifier = nn.Linear(128, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return SmallNet().eval()


def make_calibration(path: str = "calib.npy", samples: int = 64) -> None:
    """Stand-in calibration data; use a few hundred real, preprocessed inputs instead."""
    import numpy as np

    np.save(path, np.random.default_rng(0).standard_normal((samples, 3, 64, 64)).astype(np.float32))


if __name__ == "__main__":
    make_calibration()
