"""A small real segmentation net for the segment-task tests, trained in seconds.

The scenes are tests/detector.py's (shapes drawn on crops of the shipped photos); here every pixel is
labelled: 0 background, 1 circle, 2 square, 3 triangle. A stride-8 encoder and a bilinear decoder
learn them, and the ONNX has one output of shape 1x4xHxW (class logits), the layout of torchvision's and
SegFormer's exports. `build_segmenter` also writes `images/*.png` with class-id `masks/*.png`, the
folder layout `--masks` reads.

Seeded and on one thread: the same model and data on every run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from detector import CANVAS, CLASSES, backgrounds, conv, trained_onnx
from PIL import Image, ImageDraw
from torch import nn
from torch.nn import functional as F

SIZE = 96  # model input: scenes are resized to SIZE x SIZE (no letterbox)


@dataclass(frozen=True)
class Segmenter:
    onnx: Path
    images: Path
    masks: Path
    preprocess: str
    train_seconds: float


def scene(rng: np.random.Generator, photos: list[Image.Image]) -> tuple[Image.Image, Image.Image]:
    """A photo crop with 1-4 shapes, and its class-id mask ("L" image of the same size)."""
    photo = photos[rng.integers(len(photos))]
    x0, y0 = int(rng.integers(0, 64)), int(rng.integers(0, 48))
    image = photo.crop((x0, y0, x0 + 160, y0 + 120)).resize(CANVAS, Image.BILINEAR)
    mask = Image.new("L", CANVAS, 0)
    paint, label = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 5))):
        side = float(rng.uniform(30, 90))
        x1, y1 = rng.uniform(0, CANVAS[0] - side), rng.uniform(0, CANVAS[1] - side)
        cls = int(rng.integers(len(CLASSES)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = [x1, y1, x1 + side, y1 + side]
        for draw, fill in ((paint, colour), (label, cls + 1)):
            if cls == 0:
                draw.ellipse(box, fill=fill)
            elif cls == 1:
                draw.rectangle(box, fill=fill)
            else:
                draw.polygon([(x1 + side / 2, y1), (x1 + side, y1 + side), (x1, y1 + side)], fill=fill)
    return image, mask


def tensors(image: Image.Image, mask: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """What `--preprocess raw,size=96,crop=none` feeds (CHW float 0..1) and the mask at that size."""
    x = np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0
    return x, np.asarray(mask.resize((SIZE, SIZE), Image.NEAREST), np.int64)


class TinySegmenter(nn.Module):
    def __init__(self, classes: int = len(CLASSES) + 1):
        super().__init__()
        self.encoder = nn.Sequential(conv(3, 16, 2), conv(16, 32, 2), conv(32, 32), conv(32, 48, 2), conv(48, 48))
        self.decoder = nn.Sequential(conv(48 + 32, 32), nn.Conv2d(32, classes, 1))
        self.skip = self.encoder[:3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.skip(x)  # stride 4
        deep = self.encoder[3:](low)  # stride 8
        up = F.interpolate(deep, size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.decoder(torch.cat([up, low], 1))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def train(steps: int, batch_size: int = 12, seed: int = 0) -> tuple[TinySegmenter, float]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    photos = backgrounds()
    model = TinySegmenter()
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        pairs = [tensors(*scene(rng, photos)) for _ in range(batch_size)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval(), time.perf_counter() - start


def write_validation_set(root: Path, count: int = 24, seed: int = 4321) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    photos = backgrounds()
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = scene(rng, photos)
        image.save(images / f"{i:03d}.png")
        mask.save(masks / f"{i:03d}.png")
    return images, masks


def build_segmenter(root: Path, steps: int = 300) -> Segmenter:
    _, seconds = trained_onnx(train, steps, root / "segmenter.onnx", SIZE, "tiny_segmenter")
    images, masks = write_validation_set(root)
    return Segmenter(root / "segmenter.onnx", images, masks, f"raw,size={SIZE},crop=none", seconds)
