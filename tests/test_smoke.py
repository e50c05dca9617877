import numpy as np

from edgekit.core.artifact import Artifact


def test_tiny_fixture_exports(tiny_onnx):
    art = Artifact.load(tiny_onnx)
    assert art.inputs[0].shape == (None, 3, 32, 32)
    assert art.provenance["max_abs_diff_vs_torch"] < 1e-4


def test_quantize_cli_writes_int8(cli, tiny_onnx, tiny_data, tmp_path):
    r = cli("quantize", tiny_onnx, "--calib", tiny_data, "--val", tiny_data, "-o", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    assert Artifact.load(tmp_path / "tiny.int8.onnx").precision == "int8"
    assert np.isfinite(float(__import__("json").loads(r.stdout)["accuracy"]["cosine_mean"]))
