"""Ground truth for detection and segmentation, mapped into the model input like the images were.

- YOLO: `labels/NAME.txt` beside `images/NAME.jpg` (the last `images` folder of the path becomes
  `labels`, as Ultralytics does), one `class cx cy w h` line per box, normalised to 0..1 (a polygon
  `class x1 y1 x2 y2 ...` line counts as its bounding box). An image without a file has no objects.
- COCO: an instances json (`images`, `annotations` with `bbox` = x, y, w, h in pixels, `categories`);
  category ids in sorted order become class indices 0..K-1 (so COCO's 80 ids map to YOLO's 80 classes).
- Masks (segmentation): `masks/NAME.png` of class ids (255 = ignore).

Each reader returns {image path relative to the images folder: array} in the order a DataSource
streams that folder; boxes are (K, 5) x1, y1, x2, y2, class in model-input pixels after the same
resize / crop / letterbox as the image (`pre` is the folder's resolved Preprocess, `DataSource.preprocess`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgekit.core.data import IMAGE_SUFFIXES, Preprocess
from edgekit.core.errors import InvalidInputError
from edgekit.core.geometry import ImageGeometry, image_geometry

TOLERANCE = 0.01  # boxes may overhang the image by 1% (rounding in labelling tools); they are clipped
IGNORE = 255  # mask value that is not scored


def image_files(images: Path) -> list[Path]:
    """The images of a folder in the order `edgekit.core.data.DataSource` streams them."""
    return sorted(p for p in Path(images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def read_detection_labels(images: str | Path, pre: Preprocess, labels: str | Path | None = None) -> dict[str, np.ndarray]:
    """`labels`: None (YOLO labels beside the images), a COCO .json, or a folder of YOLO .txt files."""
    if labels is not None and Path(labels).suffix.lower() == ".json":
        return read_coco_labels(images, pre, labels)
    return read_yolo_labels(images, pre, labels)


def yolo_labels_dir(images: Path) -> Path:
    parts = Path(images).parts
    if "images" not in parts:
        return Path(images)  # .txt files next to the images
    i = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:i], "labels", *parts[i + 1:])


def read_yolo_labels(images: str | Path, pre: Preprocess, labels: str | Path | None = None) -> dict[str, np.ndarray]:
    images = Path(images)
    folder = Path(labels) if labels is not None else yolo_labels_dir(images)
    if not folder.is_dir():
        raise InvalidInputError(f"no YOLO labels folder {folder}", hint="put labels/*.txt beside images/ or pass --labels")
    files = image_files(images)
    by_stem = {f.relative_to(images).with_suffix("").as_posix(): f for f in files}
    out = {f.relative_to(images).as_posix(): np.zeros((0, 5), np.float32) for f in files}
    for txt in sorted(folder.rglob("*.txt")):
        stem = txt.relative_to(folder).with_suffix("").as_posix()
        image = by_stem.get(stem)
        if image is None:
            if txt.name == "classes.txt":  # LabelImg's class list
                continue
            raise InvalidInputError(f"{txt}: no image '{stem}.*' in {images}", hint="labels/NAME.txt labels images/NAME.jpg")
        size = _image_size(image)
        boxes = parse_yolo_file(txt)
        pixels = boxes[:, 1:] * np.float32([size[0], size[1], size[0], size[1]])
        out[image.relative_to(images).as_posix()] = _to_input(pixels, boxes[:, 0], _geometry(size, pre), pre)
    return out


def parse_yolo_file(txt: Path) -> np.ndarray:
    """(K, 5) class, x1, y1, x2, y2 normalised; InvalidInputError naming the file and line."""
    rows = []
    for n, line in enumerate(txt.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            values = []
        if len(values) < 5 or (len(values) > 5 and len(values) % 2 == 0) or values[0] < 0 or values[0] % 1:
            raise InvalidInputError(f"{txt}:{n}: expected 'class cx cy w h' (normalised), got '{line.strip()}'")
        if len(values) == 5:
            cls, cx, cy, w, h = values
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        else:  # a segment polygon: its bounding box
            cls, xs, ys = values[0], values[1::2], values[2::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
        if box[2] <= box[0] or box[3] <= box[1] or min(box) < -TOLERANCE or max(box) > 1 + TOLERANCE:
            raise InvalidInputError(f"{txt}:{n}: box {' '.join(line.split()[1:5])} is empty or lies outside the image "
                                    "(YOLO labels are class cx cy w h, normalised to 0..1)")
        rows.append([cls, *np.clip(box, 0.0, 1.0)])
    return np.asarray(rows, np.float32).reshape(-1, 5)


def read_coco_labels(images: str | Path, pre: Preprocess, annotations: str | Path) -> dict[str, np.ndarray]:
    images, annotations = Path(images), Path(annotations)
    data = _load_json(annotations)
    try:
        return _coco_boxes(images, pre, annotations, data)
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInputError(f"{annotations}: malformed COCO entry ({type(e).__name__}: {e})") from e


def _coco_boxes(images: Path, pre: Preprocess, annotations: Path, data: dict) -> dict[str, np.ndarray]:
    files = image_files(images)
    by_rel = {f.relative_to(images).as_posix(): f for f in files}
    by_name = {f.name: f for f in files}
    categories = sorted({int(c["id"]) for c in data.get("categories", [])} or
                        {int(a["category_id"]) for a in data["annotations"]})
    class_of = {c: i for i, c in enumerate(categories)}
    entries = {}  # image id -> (file, (width, height))
    for k, im in enumerate(data["images"]):
        name = str(im.get("file_name", ""))
        f = by_rel.get(name) or by_name.get(Path(name).name)
        if f is None:
            raise InvalidInputError(f"{annotations}: images[{k}] '{name}' is not in {images}")
        size = (int(im["width"]), int(im["height"])) if "width" in im and "height" in im else _image_size(f)
        entries[im["id"]] = (f, size)
    boxes: dict[object, list] = {i: [] for i in entries}
    for k, ann in enumerate(data["annotations"]):
        if ann.get("iscrowd"):
            continue  # crowd regions are not objects to find (Ultralytics' converter skips them too)
        where = f"{annotations}: annotations[{k}] (id {ann.get('id')})"
        if ann.get("image_id") not in entries:
            raise InvalidInputError(f"{where} names image id {ann.get('image_id')}, which is not in 'images'")
        if int(ann.get("category_id", -1)) not in class_of:
            raise InvalidInputError(f"{where} has category {ann.get('category_id')}, which is not in 'categories'")
        w, h = entries[ann["image_id"]][1]
        x, y, bw, bh = (float(v) for v in ann["bbox"])
        if bw <= 0 or bh <= 0 or x < -TOLERANCE * w or y < -TOLERANCE * h or x + bw > (1 + TOLERANCE) * w \
                or y + bh > (1 + TOLERANCE) * h:
            raise InvalidInputError(f"{where}: bbox {ann['bbox']} lies outside its {w}x{h} image")
        boxes[ann["image_id"]].append([class_of[int(ann["category_id"])], max(x, 0), max(y, 0), min(x + bw, w),
                                       min(y + bh, h)])
    out = {rel: np.zeros((0, 5), np.float32) for rel in by_rel}
    for image_id, (f, size) in entries.items():
        rows = np.asarray(boxes[image_id], np.float32).reshape(-1, 5)
        out[f.relative_to(images).as_posix()] = _to_input(rows[:, 1:], rows[:, 0], _geometry(size, pre), pre)
    return out


def read_masks(images: str | Path, pre: Preprocess, masks: str | Path) -> dict[str, np.ndarray]:
    """Per image an (H, W) uint8 class map at the model input size (IGNORE where the letterbox padded)."""
    from PIL import Image

    images, masks = Path(images), Path(masks)
    if not masks.is_dir():
        raise InvalidInputError(f"masks folder not found: {masks}")
    found = {p.relative_to(masks).with_suffix("").as_posix(): p for p in masks.rglob("*.png")}
    out = {}
    for f in image_files(images):
        stem = f.relative_to(images).with_suffix("").as_posix()
        if stem not in found:
            raise InvalidInputError(f"no mask {masks / stem}.png for image {f}")
        with Image.open(found.pop(stem)) as m:
            g = _geometry(m.size, pre)
            resized = m.convert("L").resize((round(m.width * g.scale[0]), round(m.height * g.scale[1])), Image.NEAREST)
            canvas = Image.new("L", (pre.size[1], pre.size[0]), IGNORE)
            canvas.paste(resized, (int(g.pad[0]), int(g.pad[1])))
        out[f.relative_to(images).as_posix()] = np.asarray(canvas, np.uint8)
    if found:
        name = sorted(found)[0]
        raise InvalidInputError(f"{found[name]}: no image '{name}.*' in {images}")
    return out


def _load_json(path: Path) -> dict:
    if not path.exists():
        raise InvalidInputError(f"labels file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise InvalidInputError(f"{path}: not a COCO instances file (needs 'images' and 'annotations' lists)")
    return data


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise InvalidInputError(f"cannot read image {path}: {e}") from e


def _geometry(size: tuple[int, int], pre: Preprocess) -> ImageGeometry:
    if pre is None or pre.size is None:
        raise InvalidInputError("labels need the preprocessing with its input size", hint="pass DataSource.preprocess")
    return image_geometry(size[0], size[1], pre.size, pre.crop, pre.resize)


def _to_input(xyxy: np.ndarray, classes: np.ndarray, geometry: ImageGeometry, pre: Preprocess) -> np.ndarray:
    """Boxes in file pixels -> (K, 5) in input pixels, clipped to the input; boxes cropped away are dropped."""
    h, w = pre.size
    boxes = geometry.to_input(xyxy).reshape(-1, 4)
    boxes = np.clip(boxes, 0, np.float32([w, h, w, h]))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return np.column_stack([boxes[keep], np.asarray(classes, np.float32)[keep]]).astype(np.float32).reshape(-1, 5)


def detection_truth(data, labels: str | Path | None = None) -> list[np.ndarray] | None:
    """Boxes per sample of an image-folder DataSource, in its order: from `labels` (a YOLO folder or a COCO
    json), else from the YOLO labels folder beside the images when there is one; None without labels."""
    if data.preprocess is None:
        if labels is not None:
            raise InvalidInputError(f"detection labels need a folder of images as data, not {data.path}")
        return None
    if labels is None:
        folder = yolo_labels_dir(data.path)
        if not folder.is_dir() or not any(p.name != "classes.txt" for p in folder.rglob("*.txt")):
            return None
    return list(read_detection_labels(data.path, data.preprocess, labels).values())[: len(data)]


def mask_truth(data, masks: str | Path | None) -> list[np.ndarray] | None:
    """Class maps per sample of an image-folder DataSource, in its order; None without a masks folder."""
    if masks is None:
        return None
    if data.preprocess is None:
        raise InvalidInputError(f"masks need a folder of images as data, not {data.path}")
    return list(read_masks(data.path, data.preprocess, masks).values())[: len(data)]
