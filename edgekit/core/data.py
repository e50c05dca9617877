"""Calibration / validation sources: `.npy`, `.npz` or an image folder, streamed as samples.

Every source yields `Sample(feed={input_name: array with batch axis 1}, label, name)` and is
checked against the model's inputs (name, rank, shape, dtype, finite values) as it streams,
so a 10,000-image folder is never held in memory at once.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from edgekit.core.arrays import NpyReader, NpzReader, Sample, constant_feed
from edgekit.core.errors import InvalidInputError
from edgekit.core.geometry import ImageGeometry, image_geometry, letterbox_image
from edgekit.core.tensors import TensorSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
FOLDER_SPEC_FILE = "edgekit-data.toml"  # optional preprocessing spec inside an image folder

@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a tensor: resize shorter side, crop, scale, normalise, lay out."""

    size: tuple[int, int] | None = None  # (H, W); None = take it from the model input
    resize: int | None = None  # shorter side before the crop; None = size / 0.875
    crop: str = "center"  # center | none (resize straight to size) | letterbox (keep aspect, pad 114)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    layout: str = "NCHW"
    order: str = "RGB"

PRESETS = {
    "imagenet": Preprocess(),
    "inception": Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),  # (x - 127.5) / 127.5
    "raw": Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),  # 0..1
}

def parse_preprocess(text: str | None, base: Preprocess | None = None) -> Preprocess:
    """`imagenet`, or `inception,size=224,resize=256,mean=0.5:0.5:0.5,layout=NHWC,order=BGR`."""
    spec = base or PRESETS["imagenet"]
    if not text:
        return spec
    fields = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            if part not in PRESETS:
                raise InvalidInputError(f"unknown preprocessing preset '{part}'", hint=f"one of {sorted(PRESETS)}")
            spec = PRESETS[part]
            continue
        key, value = (s.strip() for s in part.split("=", 1))
        fields[key] = value
    return _apply_fields(spec, fields, "--preprocess")

def _apply_fields(spec: Preprocess, fields: dict, where: str) -> Preprocess:
    out = {}
    try:
        for key, value in fields.items():
            value = str(value) if not isinstance(value, list) else ":".join(map(str, value))
            if key == "size":
                h, _, w = value.partition("x")
                out["size"] = (int(h), int(w or h))
            elif key == "resize":
                out["resize"] = int(value)
            elif key in ("mean", "std"):
                vals = tuple(float(v) for v in value.split(":"))
                out[key] = vals * 3 if len(vals) == 1 else vals
            elif key == "crop":
                out["crop"] = _choice(key, value, ("center", "none", "letterbox"))
            elif key == "letterbox":  # letterbox=640: Ultralytics' resize-and-pad to a 640x640 input
                h, _, w = value.partition("x")
                out["size"], out["crop"] = (int(h), int(w or h)), "letterbox"
            elif key == "layout":
                out["layout"] = _choice(key, value.upper(), ("NCHW", "NHWC"))
            elif key == "order":
                out["order"] = _choice(key, value.upper(), ("RGB", "BGR"))
            else:
                raise InvalidInputError(
                    f"unknown preprocessing key '{key}' in {where}",
                    hint="keys: size, resize, crop, letterbox, mean, std, layout, order",
                )
    except ValueError as e:
        raise InvalidInputError(f"bad preprocessing value in {where}: {e}") from e
    return replace(spec, **out)

def _choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{key}={value} (expected one of {', '.join(allowed)})")
    return value

class DataSource:
    """A re-iterable stream of samples checked against the model inputs."""

    def __init__(self, path: str | Path, inputs: list[TensorSpec], preprocess: Preprocess | None = None,
                 labels: str | Path | None = None, limit: int | None = None, consts: dict | None = None):
        self.path = Path(path)
        self.inputs = inputs
        self.limit = limit
        self.consts = constant_feed(inputs, consts or {})  # --const: given once, fed with every sample
        if not self.path.exists():
            raise InvalidInputError(f"data not found: {self.path}")
        read = [s for s in inputs if s.name not in self.consts]
        where = self.path.resolve()  # read from here even when a library changes the current directory
        if self.path.is_dir():
            self._reader = _ImageFolder(where, read, preprocess, labels)
        elif self.path.suffix == ".npy":
            self._reader = NpyReader(where, read)
        elif self.path.suffix == ".npz":
            self._reader = NpzReader(where, read)
        else:
            raise InvalidInputError(
                f"unsupported data source {self.path}", hint="use a .npy, an .npz or a folder of images"
            )
        if len(self) == 0:
            raise InvalidInputError(f"data source {self.path} holds no samples")

    def __len__(self) -> int:
        n = len(self._reader)
        return min(n, self.limit) if self.limit else n

    @property
    def has_labels(self) -> bool:
        return self._reader.has_labels

    @property
    def preprocess(self) -> Preprocess | None:
        """The resolved preprocessing of an image folder (size filled in); None for arrays."""
        return getattr(self._reader, "pre", None)

    def __iter__(self) -> Iterator[Sample]:
        for i, sample in enumerate(self._reader):
            if self.limit and i >= self.limit:
                return
            sample.feed.update({k: v.copy() for k, v in self.consts.items()})
            self._check(sample, i)
            yield sample

    def _check(self, sample: Sample, index: int) -> None:
        for spec in self.inputs:
            arr = sample.feed.get(spec.name)
            if arr is None:
                raise InvalidInputError(
                    f"data {self.path} has no input '{spec.name}' (it has {sorted(sample.feed)})",
                    hint="name .npz keys after the model inputs",
                )
            if not spec.accepts(arr.shape):
                raise InvalidInputError(
                    f"input '{spec.name}': data sample {index} has shape {'x'.join(map(str, arr.shape))}, "
                    f"the model expects {spec.display_shape()}",
                    hint="check the preprocessing size/layout or the --input shape",
                )
            if np.dtype(spec.dtype).kind != arr.dtype.kind:
                raise InvalidInputError(
                    f"input '{spec.name}': data is {arr.dtype}, the model expects {spec.dtype}"
                )
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise InvalidInputError(f"input '{spec.name}': data sample {index} contains NaN or Inf")
            if arr.dtype != np.dtype(spec.dtype):
                sample.feed[spec.name] = arr.astype(spec.dtype)

def open_data(path, inputs, preprocess=None, labels=None, limit=None, consts=None) -> DataSource:
    return DataSource(path, inputs, preprocess, labels, limit, consts)

class _ImageFolder:
    """Images in a folder (unlabelled) or in class sub-folders; decoded one at a time."""

    def __init__(self, root: Path, inputs: list[TensorSpec], preprocess: Preprocess | None, labels):
        if len(inputs) != 1:
            raise InvalidInputError(
                f"an image folder feeds one input but the model has {len(inputs)}",
                hint="use an .npz with one key per input",
            )
        self.spec = inputs[0]
        self.pre = self._resolve_preprocess(root, preprocess)
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        self.files = files
        self.labels = _read_labels(root, files, labels)
        self.has_labels = self.labels is not None

    def _resolve_preprocess(self, root: Path, pre: Preprocess | None) -> Preprocess:
        base = pre
        spec_file = root / FOLDER_SPEC_FILE
        if base is None and spec_file.exists():
            try:
                fields = tomllib.loads(spec_file.read_text()).get("preprocess", {})
            except tomllib.TOMLDecodeError as e:
                raise InvalidInputError(f"{spec_file}: {e}") from e
            preset = fields.pop("preset", "imagenet")
            if preset not in PRESETS:
                raise InvalidInputError(f"unknown preset '{preset}' in {spec_file}", hint=f"one of {sorted(PRESETS)}")
            base = _apply_fields(PRESETS[preset], fields, str(spec_file))
        base = base or PRESETS["imagenet"]
        if base.size is None:
            dims = self.spec.shape
            if len(dims) != 4:
                raise InvalidInputError(f"input '{self.spec.name}' has rank {len(dims)}; images need a rank-4 input")
            hw = dims[2:4] if base.layout == "NCHW" else dims[1:3]
            if None in hw:
                raise InvalidInputError(
                    f"input '{self.spec.name}' has dynamic height/width", hint="pass --preprocess size=HxW"
                )
            base = replace(base, size=(int(hw[0]), int(hw[1])))
        return base

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self):
        for i, f in enumerate(self.files):
            label = self.labels[i] if self.labels is not None else None
            yield Sample({self.spec.name: load_image(f, self.pre)}, label, str(f.name), file_geometry(f, self.pre))

def file_geometry(path: Path, pre: Preprocess) -> ImageGeometry:
    """Where `load_image(path, pre)` puts the file's pixels (reads the image header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return image_geometry(im.width, im.height, pre.size, pre.crop, pre.resize)
    except (UnidentifiedImageError, OSError) as e:
        raise InvalidInputError(f"cannot read image {path}: {e}") from e

def load_image(path: Path, pre: Preprocess) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            h, w = pre.size
            if pre.crop == "letterbox":
                im = letterbox_image(im, image_geometry(im.width, im.height, pre.size, "letterbox"), pre.size)
            elif pre.crop == "center":
                short = pre.resize or int(round(min(h, w) / 0.875))
                scale = short / min(im.size)
                im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))), Image.BILINEAR)
                left, top = (im.width - w) // 2, (im.height - h) // 2
                im = im.crop((left, top, left + w, top + h))
            else:
                im = im.resize((w, h), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise InvalidInputError(f"cannot read image {path}: {e}") from e
    if pre.order == "BGR":
        arr = arr[..., ::-1]
    arr = (arr - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if pre.layout == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr[None], dtype=np.float32)

def _read_labels(root: Path, files: list[Path], labels_file) -> list[int] | None:
    if labels_file:
        path = Path(labels_file)
        if not path.exists():
            raise InvalidInputError(f"labels file not found: {path}")
        mapping = {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = re.split(r"[,\s]+", line)
            if len(parts) < 2 or not parts[-1].lstrip("-").isdigit():
                raise InvalidInputError(f"{path}:{n}: expected 'FILENAME LABEL', got '{line}'")
            mapping[parts[0]] = int(parts[-1])
        try:
            return [mapping.get(str(f.relative_to(root)), mapping[f.name]) for f in files]
        except KeyError as e:
            raise InvalidInputError(f"{path} has no label for image {e.args[0]}") from e
    classes = sorted({f.parent for f in files if f.parent != root})
    if not classes:
        return None
    if any(f.parent == root for f in files):
        raise InvalidInputError(f"{root} mixes images at the top level with class sub-folders")
    index = {c: _class_index(c.name, i) for i, c in enumerate(classes)}
    return [index[f.parent] for f in files]

def _class_index(folder_name: str, position: int) -> int:
    """`281` or `281_tabby` name the class index; other names count alphabetically."""
    m = re.match(r"^(\d+)(?:[_-].*)?$", folder_name)
    return int(m.group(1)) if m else position
