"""edgekit export: factories, .pt2, TorchScript, weights, pickles, dynamic batch, checks."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import MODELS_FILE, TINY_INPUT
from models import tiny_cnn
from safetensors.torch import save_file


def _run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_export_file_factory_with_safetensors_weights(cli, tmp_path):
    trained = tiny_cnn(seed=7)  # weights differ from the factory's default seed 0
    save_file(trained.state_dict(), str(tmp_path / "w.safetensors"))
    out = tmp_path / "m.onnx"
    r = cli("export", f"{MODELS_FILE}:tiny_cnn", "--weights", tmp_path / "w.safetensors", "--input", TINY_INPUT,
            "-o", out, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["inputs"][0]["shape"] == [None, 3, 32, 32]  # dynamic batch by default
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = trained(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(out, x), expected, atol=1e-4)
    assert info["provenance"]["max_abs_diff_vs_torch"] < 1e-4


def test_export_module_factory_static_and_state_dict_pt(cli, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(MODELS_FILE.parent))
    torch.save(tiny_cnn(seed=3).state_dict(), tmp_path / "w.pt")
    out = tmp_path / "m.onnx"
    r = cli("export", "models:tiny_cnn", "--weights", tmp_path / "w.pt", "--input", TINY_INPUT, "--static",
            "-o", out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["inputs"][0]["shape"] == [1, 3, 32, 32]


def test_export_pt2_and_torchscript(cli, tmp_path):
    model = tiny_cnn()
    x = torch.randn(2, 3, 32, 32)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    torch.jit.save(torch.jit.trace(model, x), str(tmp_path / "m.ts"))
    for src in ("m.pt2", "m.ts"):
        r = cli("export", tmp_path / src, "--input", TINY_INPUT, "-o", tmp_path / f"{src}.onnx")
        assert r.exit_code == 0, r.output
        with torch.no_grad():
            np.testing.assert_allclose(_run(tmp_path / f"{src}.onnx", x.numpy()), model(x).numpy(), atol=1e-4)


def test_pickled_model_refused_unless_trusted(cli, tmp_path):
    torch.save(tiny_cnn(), tmp_path / "full.pt")
    r = cli("export", tmp_path / "full.pt", "--input", TINY_INPUT, "-o", tmp_path / "m.onnx")
    assert r.exit_code == 2 and "pickled model" in r.stderr and "--trust-pickle" in r.stderr
    assert not (tmp_path / "m.onnx").exists()
    r = cli("export", tmp_path / "full.pt", "--trust-pickle", "--input", TINY_INPUT, "-o", tmp_path / "m.onnx")
    assert r.exit_code == 0, r.output


def test_wrong_input_shape_and_bad_weights(cli, tmp_path):
    r = cli("export", f"{MODELS_FILE}:tiny_cnn", "--input", "input:1x5x32x32", "-o", tmp_path / "m.onnx")
    assert r.exit_code == 2 and "does not run on inputs" in r.stderr
    (tmp_path / "w.safetensors").write_bytes(b"not safetensors")
    r = cli("export", f"{MODELS_FILE}:tiny_cnn", "--weights", tmp_path / "w.safetensors", "--input", TINY_INPUT,
            "-o", tmp_path / "m.onnx")
    assert r.exit_code == 2 and "cannot load weights" in r.stderr
    assert list(Path(tmp_path).glob("*.onnx")) == []


def test_export_two_inputs(cli, tmp_path):
    r = cli("export", f"{MODELS_FILE}:two_input", "--input", "image:1x3x16x16", "--input", "aux:1x4",
            "-o", tmp_path / "two.onnx", "--json")
    assert r.exit_code == 0, r.output
    assert [i["name"] for i in json.loads(r.stdout)["inputs"]] == ["image", "aux"]


@pytest.mark.parametrize("spec", ["nope.py:make", "os:path_that_does_not_exist"])
def test_bad_factory(cli, tmp_path, spec):
    r = cli("export", spec, "--input", TINY_INPUT, "-o", tmp_path / "m.onnx")
    assert r.exit_code == 2 and r.stderr.startswith("error:")
