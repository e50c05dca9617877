"""A small real detector for the task-metric tests: YOLOv8's output layout, trained in about a minute.

Filled circles, squares and triangles of random size and colour are drawn on random crops of the
project's photos (calibration/photos/calib), letterboxed as Ultralytics does (the canvas is 4:3, the
model input square), and a two-stride anchor-free head learns them. The exported ONNX has one output
`output` of shape 1x(4+C)xN: cx, cy, w, h in input pixels, then C sigmoid class scores, no objectness,
exactly what `yolo export format=onnx` writes for YOLOv8/11. `build_detector` also writes a validation
set as `images/*.png` + YOLO `labels/*.txt` so detections can be scored against real ground truth.

Everything is seeded and runs on one thread, so the model and the data are the same on every run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.nn import functional as F

from edgekit.core.tensors import parse_input_spec
from edgekit.stages.export import ExportOptions, export_onnx

PHOTOS = Path(__file__).resolve().parent.parent / "calibration" / "photos" / "calib"
CLASSES = ("circle", "square", "triangle")
SIZE = 160  # model input, square
CANVAS = (240, 180)  # (width, height) of a scene before the letterbox
STRIDES = (8, 16)


@dataclass(frozen=True)
class Detector:
    onnx: Path
    images: Path  # folder of validation images; YOLO labels in images/../labels
    preprocess: str  # the --preprocess spec that feeds it
    train_seconds: float
    classes: tuple[str, ...] = CLASSES


# ---- synthetic scenes --------------------------------------------------------------------------

def backgrounds() -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(PHOTOS.glob("*.jpg"))]


def draw_scene(rng: np.random.Generator, photos: list[Image.Image]) -> tuple[Image.Image, np.ndarray]:
    """A 4:3 crop of a photo with 1-4 shapes; boxes (K, 5) as class, x1, y1, x2, y2 in canvas pixels."""
    photo = photos[rng.integers(len(photos))]
    cw = int(rng.integers(120, 224))
    ch = int(cw * 3 / 4)
    x0, y0 = int(rng.integers(0, 224 - cw + 1)), int(rng.integers(0, 224 - ch + 1))
    canvas = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize(CANVAS, Image.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    boxes: list[list[float]] = []
    for _ in range(int(rng.integers(1, 5))):
        side = float(rng.uniform(22, 80))
        x1, y1 = rng.uniform(0, CANVAS[0] - side), rng.uniform(0, CANVAS[1] - side)
        box = [x1, y1, x1 + side, y1 + side]
        if any(_iou(box, b[1:]) > 0.1 for b in boxes):
            continue
        cls = int(rng.integers(len(CLASSES)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if cls == 0:
            draw.ellipse(box, fill=colour)
        elif cls == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(x1 + side / 2, y1), (x1 + side, y1 + side), (x1, y1 + side)], fill=colour)
        boxes.append([cls, *box])
    return canvas, np.array(boxes, np.float32).reshape(-1, 5)


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def letterbox(image: Image.Image, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ultralytics' letterbox to SIZE (what `--preprocess raw,letterbox=160` does): CHW float 0..1."""
    r = min(SIZE / image.width, SIZE / image.height)
    w, h = round(image.width * r), round(image.height * r)
    left, top = round((SIZE - w) / 2 - 0.1), round((SIZE - h) / 2 - 0.1)
    square = Image.new("RGB", (SIZE, SIZE), (114, 114, 114))
    square.paste(image.resize((w, h), Image.BILINEAR), (left, top))
    out = boxes.copy()
    out[:, 1:] = boxes[:, 1:] * r + np.array([left, top, left, top], np.float32)
    return np.asarray(square, np.float32).transpose(2, 0, 1) / 255.0, out


def batch(rng: np.random.Generator, photos: list[Image.Image], n: int) -> tuple[torch.Tensor, list[np.ndarray]]:
    images, targets = [], []
    for _ in range(n):
        x, boxes = letterbox(*draw_scene(rng, photos))
        if rng.random() < 0.5:  # horizontal flip
            x = x[:, :, ::-1]
            boxes[:, [1, 3]] = SIZE - boxes[:, [3, 1]]
        images.append(np.ascontiguousarray(x))
        targets.append(boxes)
    return torch.from_numpy(np.stack(images)), targets


# ---- the model ---------------------------------------------------------------------------------

def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class TinyYolo(nn.Module):
    """Backbone to strides 8 and 16, one head per stride, YOLOv8 decode in the graph."""

    def __init__(self, classes: int = len(CLASSES)):
        super().__init__()
        self.classes = classes
        self.p3 = nn.Sequential(conv(3, 16, 2), conv(16, 32, 2), conv(32, 32), conv(32, 64, 2), conv(64, 64))
        self.p4 = nn.Sequential(conv(64, 96, 2), conv(96, 96))
        self.heads = nn.ModuleList(
            nn.Sequential(conv(c, 64), nn.Conv2d(64, 4 + classes, 1)) for c in (64, 96))
        for head in self.heads:
            nn.init.constant_(head[-1].bias[4:], -4.0)  # class prior ~0.02: a stable start
        for stride in STRIDES:
            n = SIZE // stride
            ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            centres = (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * stride
            self.register_buffer(f"centres{stride}", centres, persistent=False)

    def raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.p3(x)
        return [head(f).flatten(2).transpose(1, 2) for head, f in zip(self.heads, (p3, self.p4(p3)))]

    def decode(self, raws: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 4) boxes x1y1x2y2 in pixels and (B, N, C) class logits, strides concatenated."""
        boxes, logits = [], []
        for raw, stride in zip(raws, STRIDES):
            centres = getattr(self, f"centres{stride}")
            ltrb = F.softplus(raw[..., :4]) * stride
            boxes.append(torch.cat([centres - ltrb[..., :2], centres + ltrb[..., 2:]], -1))
            logits.append(raw[..., 4:])
        return torch.cat(boxes, 1), torch.cat(logits, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        boxes, logits = self.decode(self.raw(x))
        xywh = torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1)
        return torch.cat([xywh, logits.sigmoid()], -1).transpose(1, 2)  # 1 x (4+C) x N


# ---- training ----------------------------------------------------------------------------------

def assign(centres: torch.Tensor, strides: torch.Tensor, boxes: np.ndarray) -> torch.Tensor:
    """Index of the object each anchor learns (-1 = background): centre inside the box and within
    1.5 strides of its centre; a point claimed twice goes to the smaller box."""
    owner = torch.full((len(centres),), -1, dtype=torch.long)
    best_area = torch.full((len(centres),), float("inf"))
    for k, (_, x1, y1, x2, y2) in enumerate(boxes.tolist()):
        cx, cy, area = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * (y2 - y1)
        inside = (centres[:, 0] > x1) & (centres[:, 0] < x2) & (centres[:, 1] > y1) & (centres[:, 1] < y2)
        near = ((centres[:, 0] - cx).abs() < 1.5 * strides) & ((centres[:, 1] - cy).abs() < 1.5 * strides)
        take = inside & near & (area < best_area)
        owner[take], best_area[take] = k, area
    return owner


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    union = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter
    iou = inter / union.clamp(min=1e-6)
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).prod(1)
    return iou - (hull - union) / hull.clamp(min=1e-6), iou


def loss_of(model: TinyYolo, images: torch.Tensor, targets: list[np.ndarray]) -> torch.Tensor:
    boxes, logits = model.decode(model.raw(images))
    centres = torch.cat([getattr(model, f"centres{s}") for s in STRIDES])
    strides = torch.cat([torch.full(((SIZE // s) ** 2,), float(s)) for s in STRIDES])
    cls_target = torch.zeros_like(logits)
    box_loss, positives = boxes.new_zeros(()), 0
    for i, t in enumerate(targets):
        owner = assign(centres, strides, t)
        pos = owner >= 0
        if not pos.any():
            continue
        gt = torch.from_numpy(t[owner[pos].numpy()])
        g, iou = giou(boxes[i, pos], gt[:, 1:])
        box_loss = box_loss + (1 - g).sum()
        cls_target[i, pos, gt[:, 0].long()] = iou.detach().clamp(min=0.1)  # IoU-aware score target
        positives += int(pos.sum())
    cls_loss = F.binary_cross_entropy_with_logits(logits, cls_target, reduction="sum")
    return (cls_loss + 2.0 * box_loss) / max(positives, 1)


def train(steps: int = 200, batch_size: int = 16, seed: int = 0) -> tuple[TinyYolo, float]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    photos = backgrounds()
    model = TinyYolo()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        images, targets = batch(rng, photos, batch_size)
        loss = loss_of(model, images, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval(), time.perf_counter() - start


def write_validation_set(root: Path, count: int = 48, seed: int = 1234) -> Path:
    """`root/images/NNN.png` (4:3 scenes) and `root/labels/NNN.txt` (class cx cy w h, normalised)."""
    rng = np.random.default_rng(seed)
    photos = backgrounds()
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, boxes = draw_scene(rng, photos)
        image.save(root / "images" / f"{i:03d}.png")
        w, h = image.size
        lines = [f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                 for c, x1, y1, x2, y2 in boxes.tolist()]
        (root / "labels" / f"{i:03d}.txt").write_text("\n".join(lines) + "\n")
    return root / "images"


def trained_onnx(train_fn, steps: int, path: Path, size: int, source_name: str):
    """(model, training seconds): trained by `train_fn(steps)` on one thread (seeded: the same model on
    every run), exported to `path` with a static 1x3xSIZExSIZE input."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, seconds = train_fn(steps)
        path.parent.mkdir(parents=True, exist_ok=True)
        spec = parse_input_spec(f"images:1x3x{size}x{size}")
        export_onnx(model, path, ExportOptions(inputs=(spec,), dynamic_batch=False), source_name=source_name)
    finally:
        torch.set_num_threads(threads)
    return model, seconds


def build_detector(root: Path, steps: int = 200) -> Detector:
    """Train (seeded, one thread), export `root/detector.onnx`, write the validation set under `root`."""
    _, seconds = trained_onnx(train, steps, root / "detector.onnx", SIZE, "tiny_yolo")
    images = write_validation_set(root)
    return Detector(root / "detector.onnx", images, f"raw,letterbox={SIZE}", seconds)

if __name__ == "__main__":  # python tests/detector.py OUT: the README's detection example
    import sys

    built = build_detector(Path(sys.argv[1] if len(sys.argv) > 1 else "detector"))
    print(f"trained in {built.train_seconds:.0f} s: {built.onnx}, {built.images} (YOLO labels beside them)")
