"""int8 ops that LiteRT's XNNPACK delegate cannot run stay in float (tflite/delegation.py): a tiny HardSwish CNN
through litert-torch and ai-edge-quantizer, run on LiteRT with its default XNNPACK delegate."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

import torch  # noqa: E402

from edgekit.backends.base import CompileOptions, QuantOptions  # noqa: E402
from edgekit.backends.registry import get_backend  # noqa: E402
from edgekit.backends.tflite.delegation import undelegated_ops  # noqa: E402
from edgekit.core.data import open_data  # noqa: E402
from edgekit.core.tensors import parse_input_spec  # noqa: E402
from edgekit.stages.export import save_pt2  # noqa: E402

SPEC = parse_input_spec("input:1x3x32x32")


class HardSwishNet(torch.nn.Module):
    """MobileNetV3 / PP-LCNet style: convolutions with HardSwish between them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Hardswish(),
            torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.Hardswish(),
            torch.nn.Conv2d(16, 32, 1), torch.nn.Hardswish())
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hswish")
    pt2 = save_pt2(HardSwishNet().eval(), tmp / "hswish.pt2", [SPEC])
    rng = np.random.default_rng(0)
    np.save(tmp / "calib.npy", rng.standard_normal((32, 3, 32, 32)).astype(np.float32))
    data = open_data(tmp / "calib.npy", [SPEC])
    backend = get_backend("tflite")
    fp32 = backend.compile(pt2, None, tmp / "fp32", CompileOptions("fp32"))
    default = backend.quantize(pt2, data, QuantOptions(), tmp / "default")
    all_int8 = backend.quantize(pt2, data, QuantOptions(extra={"xnnpack_float": False}), tmp / "all-int8")
    return backend, fp32, default, all_int8, np.load(tmp / "calib.npy")[:8]


def left_out(artifact) -> Counter:
    return Counter(t for t, _ in undelegated_ops(artifact.path.read_bytes()))


def test_the_default_int8_leaves_xnnpack_no_op_it_takes_in_float(models):
    _, fp32, default, all_int8, _ = models
    kept = default.provenance["float_for_xnnpack"]
    # what XNNPACK leaves out of the fully int8 model beyond the float one's is exactly what edgekit kept in float
    assert dict(left_out(all_int8) - left_out(fp32)) == kept
    assert not left_out(default) - left_out(fp32)
    assert all_int8.provenance["float_for_xnnpack"] == {}


def test_ops_kept_in_float_cost_no_accuracy(models):
    backend, fp32, default, all_int8, x = models

    def outputs(art):
        with backend.runner(art, 2) as r:
            return np.concatenate([list(r.infer({"input": x[i:i + 1]}).values())[0] for i in range(len(x))])

    ref = outputs(fp32)

    def cosine(a):
        return float(np.sum(a * ref) / np.linalg.norm(a) / np.linalg.norm(ref))

    assert cosine(outputs(default)) >= cosine(outputs(all_int8)) - 1e-3
    assert cosine(outputs(default)) > 0.99

