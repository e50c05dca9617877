"""Tiny real models for tests: built in torch, exported with edgekit's own exporter."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """conv-bn-relu stem, a residual block, a depthwise conv, global pool, linear classifier."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.res = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
                                nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.res(x))
        x = self.dw(x)
        return self.head(x.mean(dim=(2, 3)))


class TwoInput(nn.Module):
    """An image and a feature vector, fused: two named inputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.fc_aux = nn.Linear(4, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, image, aux):
        return self.head(self.conv(image).mean(dim=(2, 3)) + self.fc_aux(aux))


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyCNN()
    # non-trivial BN statistics, so folding and re-estimation have something to do
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def two_input(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TwoInput().eval()
