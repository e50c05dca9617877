"""Bias correction of the ONNX Runtime Q/DQ int8 (edgekit.onnx.bias_correction) on a model built to need it.

A depthwise conv with one large weight a channel and eight small positive ones, after a ReLU6 (inputs with
a clearly positive mean): per-channel int8 weight steps are sized by the large weight, so the small ones
round far from their value and every channel's output mean moves. That is the shift bias correction exists
to remove (Nagel et al. 2019, section 4.2), and what EfficientNet-Lite0's depthwise convs suffer from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgekit.backends.base import QuantOptions
from edgekit.backends.registry import get_backend
from edgekit.core.artifact import Artifact
from edgekit.core.data import open_data
from edgekit.core.errors import InvalidInputError
from edgekit.core.tensors import parse_input_spec
from edgekit.stages.export import ExportOptions, export_onnx

INPUT = parse_input_spec("input:1x3x32x32")


class Shifty(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 8, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
            self.conv.bias.fill_(1.0)  # ReLU6 outputs with a positive mean
            w = torch.full(self.dw.weight.shape, 0.0019)  # just below half an int8 step...
            w[:, 0, 1, 1] = 0.5  # ...of the one large weight: they all round to zero
            self.dw.weight.copy_(w)
            self.pw.weight.copy_(torch.randn(self.pw.weight.shape, generator=g))

    def forward(self, x):
        return self.pw(self.dw(nn.functional.relu6(self.conv(x))))


@pytest.fixture(scope="module")
def shifty(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shifty") / "shifty.onnx"
    export_onnx(Shifty().eval(), out, ExportOptions(inputs=(INPUT,)), source_name="shifty")
    return out


def _mean_output_shift(model: Path, int8: Path, data) -> float:
    """Largest per-channel mean difference of the outputs, int8 vs FP32, over the data."""
    ort = get_backend("onnxruntime")
    with ort.runner(Artifact.load(model)) as f, ort.runner(Artifact.load(int8)) as q:
        diffs = [next(iter(q.infer(s.feed).values())) - next(iter(f.infer(s.feed).values())) for s in data]
    return float(np.abs(np.mean(np.concatenate(diffs), axis=(0, 2, 3))).max())


def test_bias_correction_removes_the_output_shift_of_int8_weights(shifty, tiny_data, tmp_path):
    ort = get_backend("onnxruntime")
    source, data = Artifact.load(shifty), open_data(str(tiny_data), [INPUT])
    plain = ort.quantize(source, data, QuantOptions(extra={"bias_correction": False}), tmp_path / "plain")
    corrected = ort.quantize(source, data, QuantOptions(), tmp_path / "corrected")  # on by default
    assert plain.provenance["bias_correction"] is False
    assert corrected.provenance["bias_correction"] is True and corrected.provenance["bias_corrected_layers"] == 3
    before, after = _mean_output_shift(shifty, plain.path, data), _mean_output_shift(shifty, corrected.path, data)
    assert before > 0.03  # the planted shift is real...
    assert after < before / 5  # ...and the correction removes most of it
    # only the int32 biases changed: same graph, same int8 weights
    a, b = onnx.load(str(plain.path)), onnx.load(str(corrected.path))
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    changed = {i.name for i, j in zip(a.graph.initializer, b.graph.initializer)
               if not np.array_equal(numpy_helper.to_array(i), numpy_helper.to_array(j))}
    assert changed and all(numpy_helper.to_array(i).dtype == np.int32
                           for i in b.graph.initializer if i.name in changed)


def test_bias_correction_option_must_be_a_boolean(shifty, tiny_data, tmp_path):
    data = open_data(str(tiny_data), [INPUT])
    with pytest.raises(InvalidInputError, match="bias_correction"):
        get_backend("onnxruntime").quantize(Artifact.load(shifty), data, QuantOptions(extra={"bias_correction": "yes"}),
                                            tmp_path)
    assert not list(tmp_path.iterdir())
