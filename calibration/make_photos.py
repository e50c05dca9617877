"""Regenerate the shipped photo crops from scikit-image and scikit-learn sample images.

Run once by a maintainer (needs scikit-image and scikit-learn); the crops are committed, so
users and CI never need those packages or the network. Validation and calibration crops are
different windows of the same 20 photos (224x224, JPEG quality 95).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE = ["astronaut", "brick", "camera", "cell", "chelsea", "clock_motion", "coffee", "coins", "grass",
           "gravel", "hubble_deep_field", "ihc", "moon", "motorcycle_left", "motorcycle_right", "retina",
           "rocket", "text"]
SKLEARN = ["china.jpg", "flower.jpg"]
# (scale of the shorter side, x position 0..1, y position 0..1)
VAL_WINDOWS = [(1.0, .5, .5), (.7, .5, .5), (.6, 0, 0), (.6, 1, 0), (.6, 0, 1), (.6, 1, 1)]
CALIB_WINDOWS = [(.85, .5, .5), (.8, .2, .5), (.8, .8, .5), (.5, .5, .3)]
SIZE = 224


def photos():
    import os

    import skimage
    import sklearn.datasets

    data_dir = Path(os.path.dirname(skimage.__file__)) / "data"
    for name in SKIMAGE:
        path = next(data_dir.glob(name + ".*"))
        yield name, Image.open(path).convert("RGB")
    img_dir = Path(os.path.dirname(sklearn.datasets.__file__)) / "images"
    for name in SKLEARN:
        yield Path(name).stem, Image.open(img_dir / name).convert("RGB")


def crop(im: Image.Image, scale: float, fx: float, fy: float) -> Image.Image:
    side = int(min(im.size) * scale)
    left = int((im.width - side) * fx)
    top = int((im.height - side) * fy)
    return im.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.BICUBIC)


def main() -> None:
    root = Path(__file__).parent / "photos"
    for split, windows in (("val", VAL_WINDOWS), ("calib", CALIB_WINDOWS)):
        out = root / split
        out.mkdir(parents=True, exist_ok=True)
        for name, im in photos():
            for i, w in enumerate(windows):
                crop(im, *w).save(out / f"{name}_{i}.jpg", quality=95)
    print("wrote", sum(1 for _ in root.rglob("*.jpg")), "crops")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
