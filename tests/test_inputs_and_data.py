"""Input specs and data sources: parsing, streaming, and every data error naming what is wrong."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.core.data import DataSource, parse_preprocess
from edgekit.core.errors import InvalidInputError
from edgekit.core.tensors import TensorSpec, parse_input_spec

IMG = TensorSpec("input", (None, 3, 32, 32))


def test_parse_input_spec_dims_dynamic_and_dtype():
    s = parse_input_spec("ids:?x128:int64")
    assert (s.name, s.shape, s.dtype) == ("ids", (None, 128), "int64")
    assert parse_input_spec("x:1x3x8x8").shape == (1, 3, 8, 8)


@pytest.mark.parametrize("bad", ["x", "x:1xAx3", "x:1x3:float99", ":1x3", "x:0x3"])
def test_parse_input_spec_rejects(bad):
    with pytest.raises(InvalidInputError):
        parse_input_spec(bad)


def test_npy_streams_samples_with_batch_axis(tmp_path):
    arr = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "d.npy", arr)
    samples = list(DataSource(tmp_path / "d.npy", [IMG]))
    assert len(samples) == 5 and samples[2].feed["input"].shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(samples[2].feed["input"][0], arr[2])


def test_shape_mismatch_names_input_and_both_shapes(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(InvalidInputError) as e:
        list(DataSource(tmp_path / "d.npy", [IMG]))
    assert "'input'" in e.value.message and "1x3x28x28" in e.value.message and "?x3x32x32" in e.value.message


def test_nan_in_data_is_rejected(tmp_path):
    arr = np.zeros((3, 3, 32, 32), np.float32)
    arr[1, 0, 0, 0] = np.nan
    np.save(tmp_path / "d.npy", arr)
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        list(DataSource(tmp_path / "d.npy", [IMG]))


def test_npz_keys_must_name_inputs_and_labels_are_read(tmp_path):
    np.savez(tmp_path / "d.npz", image=np.zeros((4, 3, 32, 32), np.float32), labels=np.arange(4))
    with pytest.raises(InvalidInputError, match="no input 'input'"):
        DataSource(tmp_path / "d.npz", [IMG])
    src = DataSource(tmp_path / "d.npz", [TensorSpec("image", (None, 3, 32, 32))])
    assert src.has_labels and [s.label for s in src] == [0, 1, 2, 3]


def test_missing_and_empty_data(tmp_path):
    with pytest.raises(InvalidInputError, match="data not found"):
        DataSource(tmp_path / "nope", [IMG])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="holds no samples"):
        DataSource(tmp_path / "empty", [IMG])


def _write_images(folder: Path, n: int, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"im{i}.png")


def test_image_folder_preprocessing_and_subfolder_labels(tmp_path):
    _write_images(tmp_path / "3_cat", 2)
    _write_images(tmp_path / "7_dog", 3)
    src = DataSource(tmp_path, [IMG])  # size taken from the model input
    samples = list(src)
    assert [s.label for s in samples] == [3, 3, 7, 7, 7]
    x = samples[0].feed["input"]
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    nhwc = DataSource(tmp_path, [TensorSpec("input", (1, 32, 32, 3))], parse_preprocess("raw,layout=NHWC"))
    y = next(iter(nhwc)).feed["input"]
    assert y.shape == (1, 32, 32, 3) and 0.0 <= y.min() and y.max() <= 1.0


def test_image_folder_labels_file_and_folder_spec(tmp_path):
    _write_images(tmp_path, 2)
    (tmp_path / "labels.txt").write_text("im0.png 5\nim1.png 9\n")
    (tmp_path / "edgekit-data.toml").write_text('[preprocess]\npreset = "inception"\nsize = "16"\n')
    src = DataSource(tmp_path, [TensorSpec("input", (None, 3, 16, 16))], labels=tmp_path / "labels.txt")
    assert [s.label for s in src] == [5, 9]
    (tmp_path / "edgekit-data.toml").write_text('[preprocess]\ncolour = "rgb"\n')
    with pytest.raises(InvalidInputError, match="unknown preprocessing key 'colour'"):
        DataSource(tmp_path, [IMG])


def test_image_folder_streams_one_image_at_a_time(tmp_path, monkeypatch):
    """A large folder is never decoded at once: iteration is lazy."""
    _write_images(tmp_path, 50)
    import edgekit.core.data as data

    decoded = []
    real = data.load_image
    monkeypatch.setattr(data, "load_image", lambda p, pre: decoded.append(p) or real(p, pre))
    it = iter(DataSource(tmp_path, [IMG]))
    next(it)
    assert len(decoded) == 1


def test_bad_preprocess_spec():
    with pytest.raises(InvalidInputError, match="unknown preprocessing preset"):
        parse_preprocess("imagenette")
    with pytest.raises(InvalidInputError, match="layout"):
        parse_preprocess("layout=NCWH")
