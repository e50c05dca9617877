"""TFLite `--method auto`: NNCF's mean of per-sample min/max for a convolutional network (the model's inputs, outputs
and small tensors keep the min/max over all samples), activations quantized at run time for an encoder
(tflite/compute_share.py).
Real litert-torch conversions and ai-edge-quantizer calibrations of tiny models, run on LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

import torch  # noqa: E402

from edgekit.backends.base import CompileOptions, QuantOptions  # noqa: E402
from edgekit.backends.registry import get_backend  # noqa: E402
from edgekit.backends.tflite.compute_share import matmul_share  # noqa: E402
from edgekit.core.data import open_data  # noqa: E402
from edgekit.core.tensors import parse_input_spec  # noqa: E402
from edgekit.stages.export import save_pt2  # noqa: E402

IMAGE = parse_input_spec("input:1x3x32x32")
TOKENS = parse_input_spec("input:1x16x64")
CALIB, OUTLIER_GAIN = 32, 30.0  # one calibration sample of 32 is 30x the others (a flash, a saturated frame)


class ReluNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1, stride=2), torch.nn.ReLU())
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


class Encoder(torch.nn.Module):
    """Two pre-LN transformer blocks on a sequence of 16 embeddings."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(2))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def quantize(tmp, module, spec, calib: np.ndarray, method="auto"):
    pt2 = save_pt2(module.eval(), tmp / "model.pt2", [spec])
    np.save(tmp / "calib.npy", calib)
    backend = get_backend("tflite")
    fp32 = backend.compile(pt2, None, tmp / "fp32", CompileOptions("fp32"))
    int8 = backend.quantize(pt2, open_data(tmp / "calib.npy", [spec]), QuantOptions(method=method),
                            tmp / f"int8-{method}")
    return backend, fp32, int8


def outputs(backend, art, x: np.ndarray) -> np.ndarray:
    with backend.runner(art, 2) as r:
        return np.concatenate([list(r.infer({"input": x[i:i + 1]}).values())[0] for i in range(len(x))])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def relu_models(tmp_path_factory):
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((CALIB, 3, 32, 32)).astype(np.float32)
    calib[7] *= OUTLIER_GAIN
    tmp = tmp_path_factory.mktemp("ranges")
    backend, fp32, auto = quantize(tmp, ReluNet(), IMAGE, calib)
    minmax = backend.quantize(fp32, open_data(tmp / "calib.npy", [IMAGE]), QuantOptions(method="minmax"),
                              tmp / "int8-minmax")
    val = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    return backend, fp32, auto, minmax, val, calib


def test_a_cnn_takes_the_mean_of_per_sample_ranges(relu_models):
    _, fp32, auto, minmax, _, _ = relu_models
    assert matmul_share(fp32.path.read_bytes()) < 0.1
    assert auto.provenance["calibration"] == "mean of per-sample min/max"
    assert auto.provenance["calibration_choice"].startswith("auto: mean_minmax, ")
    assert minmax.provenance["calibration"] == "min/max over all samples" and "calibration_choice" not in minmax.provenance


def first_conv_scale(art) -> float:
    from edgekit.backends.tflite import flatbuffer as fb

    obj = fb.read(art.path.read_bytes())
    sg, names = obj.subgraphs[0], fb.op_type_names(obj)
    conv = next(o for o in sg.operators if names[o.opcodeIndex] == "CONV_2D")
    return float(sg.tensors[conv.outputs[0]].quantization.scale[0])


def test_one_extreme_calibration_sample_no_longer_sets_the_ranges(relu_models):
    backend, fp32, auto, minmax, val, _ = relu_models
    # 31 ordinary samples and one 30x: the mean range is about (31 + 30) / 32 = 1.9 ordinary ranges, not 30
    # (measured: a 15x finer step)
    assert first_conv_scale(auto) < first_conv_scale(minmax) / 8
    ref = outputs(backend, fp32, val)
    error = {name: float(np.linalg.norm(outputs(backend, art, val) - ref) / np.linalg.norm(ref))
             for name, art in (("auto", auto), ("minmax", minmax))}
    # on ordinary inputs no worse (measured 0.0579 against 0.0584): both share the logits' range of all samples
    # (the next test), whose step is most of the error of this two-layer model
    assert error["auto"] < 1.05 * error["minmax"], error
    assert cosine(outputs(backend, auto, val), ref) > 0.99


def output_scale(art) -> float:
    """The int8 scale of the tensor the model's DEQUANTIZE turns into its float output."""
    from edgekit.backends.tflite import flatbuffer as fb

    obj = fb.read(art.path.read_bytes())
    sg, names = obj.subgraphs[0], fb.op_type_names(obj)
    (dq,) = [o for o in sg.operators if names[o.opcodeIndex] == "DEQUANTIZE" and o.outputs[0] in sg.outputs]
    return float(sg.tensors[dq.inputs[0]].quantization.scale[0])


def test_the_outputs_keep_the_range_of_all_samples(relu_models):
    """Averaged, the logits' range would clip every sample whose logits are larger than the mean sample's."""
    backend, fp32, auto, minmax, _, calib = relu_models
    ref = outputs(backend, fp32, calib)
    full_range = max(float(ref.max()), 0.0) - min(float(ref.min()), 0.0)
    assert output_scale(auto) == pytest.approx(full_range / 255, rel=0.05)
    assert output_scale(auto) == pytest.approx(output_scale(minmax), rel=0.05)


@pytest.fixture(scope="module")
def encoder_models(tmp_path_factory):
    rng = np.random.default_rng(1)
    calib = rng.standard_normal((CALIB, 16, 64)).astype(np.float32)
    tmp = tmp_path_factory.mktemp("encoder")
    backend, fp32, auto = quantize(tmp, Encoder(), TOKENS, calib)
    static = backend.quantize(fp32, open_data(tmp / "calib.npy", [TOKENS]), QuantOptions(method="minmax"),
                              tmp / "int8-minmax")
    return backend, fp32, auto, static, rng.standard_normal((16, 16, 64)).astype(np.float32)


def test_an_encoder_quantizes_its_activations_at_run_time(encoder_models):
    backend, fp32, auto, static, val = encoder_models
    assert matmul_share(fp32.path.read_bytes()) > 0.9
    assert auto.provenance["calibration"].startswith("none: activation ranges are measured at run time")
    assert auto.provenance["quantizer"].endswith("dynamic_wi8_afp32")
    assert auto.provenance["calibration_choice"].startswith("auto: dynamic, an encoder (")
    ref = outputs(backend, fp32, val)
    dynamic = cosine(outputs(backend, auto, val).ravel(), ref.ravel())
    full = cosine(outputs(backend, static, val).ravel(), ref.ravel())
    # measured 1 - cosine: 5e-6 dynamic, 2.5e-4 static (random weights, no trained outliers to break it)
    assert dynamic > 0.99 and 1 - dynamic < (1 - full) / 5, (dynamic, full)
    # int8 weights: the file is about a quarter of the float one
    assert auto.path.stat().st_size < 0.4 * fp32.path.stat().st_size
