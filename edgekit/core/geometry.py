"""Where an image file's pixels land in the model input: the resize / centre crop / letterbox of
`edgekit.core.data`, as a scale and a pad, so boxes in file pixels map like the image did."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LETTERBOX_FILL = (114, 114, 114)  # Ultralytics' grey


@dataclass(frozen=True)
class ImageGeometry:
    """input pixel = source pixel * scale + pad."""

    source: tuple[int, int]  # (width, height) of the image file
    scale: tuple[float, float]  # (x, y)
    pad: tuple[float, float]  # (left, top) in input pixels; negative where a centre crop cut the image

    def to_input(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes (..., 4) x1, y1, x2, y2 in source pixels -> model-input pixels."""
        (sx, sy), (px, py) = self.scale, self.pad
        return np.asarray(xyxy, np.float32) * np.float32([sx, sy, sx, sy]) + np.float32([px, py, px, py])

    def to_source(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes (..., 4) in model-input pixels -> source pixels (the inverse of `to_input`)."""
        (sx, sy), (px, py) = self.scale, self.pad
        return (np.asarray(xyxy, np.float32) - np.float32([px, py, px, py])) / np.float32([sx, sy, sx, sy])


def image_geometry(width: int, height: int, size: tuple[int, int], crop: str = "center",
                   resize: int | None = None) -> ImageGeometry:
    """The scale and pad that preprocessing to `size` (H, W) with `crop` applies to a width x height image."""
    h, w = size
    if crop == "letterbox":  # as Ultralytics' LetterBox: one ratio for both axes, centred, pads rounded apart
        r = min(w / width, h / height)
        new_w, new_h = round(width * r), round(height * r)
        return ImageGeometry((width, height), (r, r), (round((w - new_w) / 2 - 0.1), round((h - new_h) / 2 - 0.1)))
    if crop == "center":  # the arithmetic of load_image's centre crop
        short = resize or int(round(min(h, w) / 0.875))
        scale = short / min(width, height)
        new_w, new_h = max(w, round(width * scale)), max(h, round(height * scale))
        return ImageGeometry((width, height), (new_w / width, new_h / height), (-((new_w - w) // 2), -((new_h - h) // 2)))
    return ImageGeometry((width, height), (w / width, h / height), (0, 0))


def letterbox_image(im, geometry: ImageGeometry, size: tuple[int, int]):
    """A PIL image resized keeping its aspect ratio, then padded with grey 114 to `size` (H, W)."""
    from PIL import Image

    r = geometry.scale[0]
    resized = im.resize((round(im.width * r), round(im.height * r)), Image.BILINEAR)
    canvas = Image.new("RGB", (size[1], size[0]), LETTERBOX_FILL)
    canvas.paste(resized, (int(geometry.pad[0]), int(geometry.pad[1])))
    return canvas
