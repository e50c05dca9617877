"""SmoothQuant (edgekit.onnx.smoothquant and the `smooth_quant` option of the int8 targets) on a tiny pre-LN
transformer with two planted 60x LayerNorm feature dims, as trained transformers have."""

from __future__ import annotations

import contextlib
import json
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgekit.backends.base import QuantOptions
from edgekit.backends.registry import get_backend
from edgekit.core.artifact import Artifact
from edgekit.core.data import open_data
from edgekit.core.errors import InvalidInputError
from edgekit.core.tensors import parse_input_spec
from edgekit.onnx.smoothquant import find_groups, smooth_onnx
from edgekit.stages.export import ExportOptions, export_onnx
from edgekit.stages.validate import compare, run_outputs, run_reference

D, SEQ, OUTLIER_GAIN = 64, 16, 60.0


class Block(nn.Module):
    """Pre-LN attention (separate q/k/v: one LayerNorm feeds three MatMuls) and a GELU MLP."""

    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.q, self.k, self.v = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.fc1, self.fc2 = nn.Linear(D, 2 * D), nn.Linear(2 * D, D)
        with torch.no_grad():  # the outlier dims; the next layers scale them back (same function class)
            for ln, nxt in ((self.ln1, (self.q, self.k, self.v)), (self.ln2, (self.fc1,))):
                ln.weight[:2] = OUTLIER_GAIN
                for linear in nxt:
                    linear.weight[:, :2] /= OUTLIER_GAIN

    def forward(self, x):  # two heads: OpenVINO 2026.4's CPU plugin crashed compiling the one-head form
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = (y.reshape(b, t, 2, d // 2).transpose(1, 2) for y in (self.q(h), self.k(h), self.v(h)))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // 2) ** 0.5, dim=-1)
        x = x + (att @ v).transpose(1, 2).reshape(b, t, d)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(Block(), Block())
        self.ln, self.head = nn.LayerNorm(D), nn.Linear(D, 10)

    def forward(self, x):
        return self.head(self.ln(self.blocks(x)).mean(1)) * 4


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sq")
    torch.manual_seed(0)
    path = folder / "tiny_transformer.onnx"
    export_onnx(TinyTransformer().eval(), path,
                ExportOptions(inputs=(parse_input_spec(f"x:1x{SEQ}x{D}"),), dynamic_batch=False),
                source_name="tiny_transformer")
    rng = np.random.default_rng(0)
    for name, n in (("calib", 32), ("val", 48)):
        np.save(folder / f"{name}.npy", rng.standard_normal((n, SEQ, D)).astype(np.float32))
    ref = Artifact.load(path)
    calib, val = (open_data(str(folder / f"{n}.npy"), ref.inputs) for n in ("calib", "val"))
    with get_backend("onnxruntime").runner(ref) as runner:
        ref_out = run_reference(runner, val)
    return ref, calib, val, ref_out, folder


def _cosine(backend_name, model, extra, folder):
    ref, calib, val, ref_out, _ = model
    backend = get_backend(backend_name)
    with contextlib.redirect_stdout(sys.stderr):
        art = backend.quantize(ref, calib, QuantOptions(max_samples=32, extra=extra), folder)
    with backend.runner(art) as runner:
        return compare(ref_out, run_outputs(runner, val, ref_out.output_names))["cosine_mean"], art


def test_smoothing_keeps_fp32_outputs(model, tmp_path):
    ref, calib, val, ref_out, _ = model
    out = tmp_path / "smoothed.onnx"
    summary = smooth_onnx(ref.path, out, calib, alpha=0.5)
    assert summary["groups"] == 4  # ln1 -> q, k, v and ln2 -> fc1, in both blocks
    assert summary["max_scale"] > 10  # the planted dims moved into the weights
    assert any("ReduceMean" in s for s in summary["skipped"])  # the head's LayerNorm feeds a mean
    with get_backend("onnxruntime").runner(Artifact(out, "onnx", "fp32", "onnxruntime", ref.inputs)) as runner:
        got = run_outputs(runner, val, ref_out.output_names)
    for want, have in zip(ref_out.outputs, got):
        np.testing.assert_allclose(have[0], want[0], atol=1e-4, rtol=1e-4)
    smoothed = onnx.load(str(out))
    gammas = [n.input[1] for n in smoothed.graph.node if n.op_type == "LayerNormalization"]
    assert len(set(gammas)) == len(gammas)  # the exporter's shared gamma was copied, not scaled for all


def test_one_layernorm_feeding_three_matmuls_is_one_group(model):
    groups, _ = find_groups(onnx.load(str(model[0].path)))
    assert sorted(len(g.consumers) for g in groups) == [1, 1, 3, 3]


def test_onnxruntime_int8_is_closer_to_fp32_with_smoothing(model, tmp_path):
    plain, _ = _cosine("onnxruntime", model, {"smooth_quant": False}, tmp_path / "plain")
    smoothed, art = _cosine("onnxruntime", model, {"smooth_quant": 0.5}, tmp_path / "smooth")
    assert art.provenance["smooth_quant"]["groups"] == 4
    assert Artifact.load(art.path).provenance["smooth_quant"]["alpha"] == 0.5  # in the sidecar
    assert 1 - smoothed < (1 - plain) / 5, (plain, smoothed)  # measured: cosine 0.9477 -> 0.9996


def test_tensorrt_qdq_takes_the_option(model, tmp_path):
    plain, _ = _cosine("tensorrt", model, {}, tmp_path / "plain")
    smoothed, art = _cosine("tensorrt", model, {"smooth_quant": 0.5}, tmp_path / "smooth")
    assert art.provenance["smooth_quant"]["groups"] == 4
    assert 1 - smoothed < (1 - plain) / 5, (plain, smoothed)  # measured: 0.9394 -> 0.9998


def test_openvino_smooths_the_onnx_and_turns_nncf_smoothquant_off(model, tmp_path):
    pytest.importorskip("nncf")
    off, art_off = _cosine("openvino", model, {"smooth_quant": False}, tmp_path / "off")
    on, art_on = _cosine("openvino", model, {"smooth_quant": 0.5}, tmp_path / "on")
    assert "smooth_quant" not in art_off.provenance and art_off.provenance["nncf_smooth_quant"] == -1
    assert art_on.provenance["smooth_quant"]["groups"] == 4
    assert art_on.provenance["nncf_smooth_quant"] == -1  # smoothed once, by edgekit
    assert 1 - on < (1 - off) / 5, (off, on)  # measured: 0.9757 -> 0.9981


@pytest.mark.parametrize("alpha", [0, -0.5, 1.5, "high"])
def test_bad_alpha_is_invalid_input(model, tmp_path, alpha):
    ref, calib, _, _, _ = model
    with pytest.raises(InvalidInputError) as e:
        smooth_onnx(ref.path, tmp_path / "x.onnx", calib, alpha=alpha)
    assert "alpha must be in (0, 1]" in e.value.message and "\n" not in e.value.message
    assert not (tmp_path / "x.onnx").exists()
    if alpha != 0:  # 0 is "off" as an option value
        with pytest.raises(InvalidInputError):
            get_backend("onnxruntime").quantize(ref, calib, QuantOptions(extra={"smooth_quant": alpha}), tmp_path)
        with pytest.raises(InvalidInputError):
            get_backend("tensorrt").quantize(ref, calib, QuantOptions(extra={"smooth_quant": alpha}), tmp_path)


def test_cli_quantize_reads_the_profile_option(cli, model, tmp_path):
    ref, _, _, _, folder = model
    profile = tmp_path / "sq.toml"
    profile.write_text('name = "sq"\n[runtime]\ntarget = "onnxruntime"\n[runtime.options]\nsmooth_quant = 0.5\n')
    r = cli("quantize", ref.path, "--profile", profile, "--calib", folder / "calib.npy", "--max-samples", "16",
            "-o", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["artifact"]["provenance"]["smooth_quant"]["groups"] == 4
    profile.write_text(profile.read_text().replace("0.5", "2.0"))
    r = cli("quantize", ref.path, "--profile", profile, "--calib", folder / "calib.npy", "-o", tmp_path / "bad")
    assert r.exit_code == 2 and "alpha must be in (0, 1]" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_a_model_without_layernorm_is_written_unchanged(tiny_onnx, tiny_data, tmp_path):
    ref = Artifact.load(tiny_onnx)
    summary = smooth_onnx(tiny_onnx, tmp_path / "cnn.onnx", open_data(str(tiny_data), ref.inputs), alpha=0.5)
    assert summary["groups"] == 0 and summary["samples"] == 0  # no statistics pass either
    assert onnx.load(str(tmp_path / "cnn.onnx")).graph == onnx.load(str(tiny_onnx)).graph


# --- LayerNorm -> MatMul as the torch exporters emit it (issue 14 point 4) ---------------------------------

EXPORTS = [("torchscript", 14, "decomposed"), ("torchscript", 17, "fused"), ("dynamo", 18, "fused")]


class ExportedEncoder(nn.Module):
    """nn.TransformerEncoderLayer pre-LN (LayerNorm -> Transpose -> fused q/k/v MatMul) and post-LN (the
    LayerNorm also feeds the residual Add), then the hand-written pre-LN Block (one LayerNorm, three MatMuls)."""

    def __init__(self):
        super().__init__()
        self.pre, self.post = (nn.TransformerEncoderLayer(D, 2, 2 * D, dropout=0.0, batch_first=True, norm_first=f)
                               for f in (True, False))
        self.block, self.head = Block(), nn.Linear(D, 10)
        with torch.no_grad():
            self.pre.norm1.weight[:2] = OUTLIER_GAIN
            self.post.norm1.weight[:2] = OUTLIER_GAIN

    def forward(self, x):
        return self.head(self.block(self.post(self.pre(x))))


@pytest.fixture(scope="module", params=EXPORTS, ids=[f"{e}-opset{o}" for e, o, _ in EXPORTS])
def exported(request, tmp_path_factory):
    from edgekit.core.onnx_model import describe_model

    exporter, opset, form = request.param
    folder = tmp_path_factory.mktemp(f"{exporter}{opset}")
    torch.manual_seed(0)
    path = folder / "encoder.onnx"
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportedEncoder().eval(), (torch.randn(1, SEQ, D),), str(path), input_names=["x"],
                          dynamo=exporter == "dynamo", opset_version=opset)
    np.save(folder / "calib.npy", np.random.default_rng(1).standard_normal((8, SEQ, D)).astype(np.float32))
    calib = open_data(str(folder / "calib.npy"), describe_model(onnx.load(str(path))).inputs)
    return path, calib, form


def test_find_groups_in_torch_exports(exported):
    path, _, form = exported
    model = onnx.load(str(path))
    assert any(n.op_type == "LayerNormalization" for n in model.graph.node) == (form == "fused")
    groups, skipped = find_groups(model)
    # pre: norm1 -> Transpose -> in_proj, norm2 -> linear1; post: norm1 -> linear1 (+ residual);
    # block: ln1 -> q, k, v and ln2 -> fc1. post.norm2 feeds the block's LayerNorm: left alone.
    assert sorted(len(g.consumers) for g in groups) == [1, 1, 1, 1, 3], skipped
    assert {g.form for g in groups} == {form}
    assert sorted(g.others for g in groups) == [0, 0, 0, 0, 1]  # post-LN: the residual Add reads it too
    assert len(skipped) == 1 and "cannot absorb a scale" in skipped[0]


def test_smoothing_torch_exports_keeps_fp32_outputs(exported, tmp_path):
    import onnxruntime as ort

    path, calib, form = exported
    out = tmp_path / "smoothed.onnx"
    summary = smooth_onnx(path, out, calib, alpha=0.5)
    assert summary["groups"] == 5 and summary["copied_affine"] == 1 and summary["max_scale"] > 5
    onnx.checker.check_model(onnx.load(str(out)))
    x = np.random.default_rng(2).standard_normal((1, SEQ, D)).astype(np.float32) * 2
    want, have = (ort.InferenceSession(str(p)).run(None, {"x": x})[0] for p in (path, out))
    assert np.abs(want - have).max() < 1e-4 * max(1.0, np.abs(want).max())


def test_onnxruntime_offers_smooth_quant_for_exports(exported):
    backend = get_backend("onnxruntime")
    variants = backend.calibration_variants(QuantOptions(extra={"transformer_rules": False}), exported[0])
    assert {"extra": {"smooth_quant": 0.5}} in variants
    # a transformer (attention behind LayerNorm -> MatMul) is smoothed by default: not offered again
    assert {"extra": {"smooth_quant": 0.5}} not in backend.calibration_variants(QuantOptions(), exported[0])
