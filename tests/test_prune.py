"""Structured pruning on tiny real models: residual adds, concats, depthwise convs, two inputs, .pt2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from models import tiny_cnn, two_input
from torch import nn

from edgekit.core.artifact import Artifact
from edgekit.core.errors import InvalidInputError
from edgekit.core.tensors import parse_input_spec
from edgekit.stages.prune.recover import Batches, RecoveryOptions, distill, reestimate_batchnorm
from edgekit.stages.prune.run import PruneOptions, prune_model
from edgekit.stages.prune.structure import PruneSpec, is_2_4_sparse, layer_widths, sparsify_2_4

pytest.importorskip("torch_pruning")

TINY = (parse_input_spec("input:1x3x32x32"),)
MODELS = Path(__file__).parent / "models.py"


class ConcatNet(nn.Module):
    """Two branches concatenated, a conv on the concat, and two outputs: logits and a feature map."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.features = nn.Conv2d(32, 6, 1)  # its output is part of the model's contract
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        y = self.mix(torch.cat([self.a(x), self.b(x)], dim=1))
        return self.head(y.mean(dim=(2, 3))), self.features(y)


class ScaledNet(nn.Module):
    """A raw nn.Parameter multiplying activations: exported, it is an op edgekit cannot prune."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1, 8, 1, 1))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head((self.conv(x) * self.scale).mean(dim=(2, 3)))


def make_scaled_net():
    torch.manual_seed(0)
    return ScaledNet().eval()


def _run(model, *inputs):
    with torch.no_grad():
        return model(*inputs)


def test_residual_and_depthwise_channels_removed_output_unchanged():
    model = tiny_cnn()
    result = prune_model(model, PruneOptions(spec=PruneSpec(ratio=0.5), inputs=TINY))
    pruned = result.model
    x = torch.randn(2, 3, 32, 32)
    assert _run(pruned, x).shape == _run(model, x).shape == (2, 10)
    w = layer_widths(pruned)
    # every prunable layer lost half its channels; the residual add keeps stem and res.3 equal
    assert w == {"stem.0": 8, "res.0": 8, "res.3": 8, "dw.0": 8, "dw.3": 16, "head": 10}
    assert pruned.dw[0].groups == pruned.dw[0].in_channels == 8  # depthwise stays depthwise
    assert pruned.head.in_features == 16
    assert layer_widths(model)["stem.0"] == 16  # the caller's model is left alone
    r = result.report
    assert r["kept_whole"] == ["head"]
    assert r["macs"]["after"] <= 0.3 * r["macs"]["before"] and r["params"]["after"] < r["params"]["before"]


def test_concat_and_output_contract():
    torch.manual_seed(0)
    model = ConcatNet().eval()
    spec = (parse_input_spec("x:1x3x16x16"),)
    result = prune_model(model, PruneOptions(spec=PruneSpec(ratio=0.5), inputs=spec))
    x = torch.randn(1, 3, 16, 16)
    logits, feat = _run(result.model, x)
    assert logits.shape == (1, 4) and feat.shape == (1, 6, 16, 16)
    w = layer_widths(result.model)
    assert (w["a.0"], w["b.0"], w["mix.0"]) == (8, 8, 16)
    assert result.model.mix[0].in_channels == 16  # the concat of two 8-channel branches
    assert set(result.report["kept_whole"]) == {"features", "head"}


def test_two_input_model_prunes_coupled_branches():
    model = two_input()
    specs = (parse_input_spec("image:1x3x16x16"), parse_input_spec("aux:1x4"))
    result = prune_model(model, PruneOptions(spec=PruneSpec(ratio=0.5), inputs=specs))
    image, aux = torch.randn(3, 3, 16, 16), torch.randn(3, 4)
    assert _run(result.model, image, aux).shape == (3, 5)
    w = layer_widths(result.model)
    assert w["conv.0"] == w["fc_aux"] == 4 and w["head"] == 5  # the add couples both branches


def test_round_to_nearest_multiple_and_global_ranking():
    spec = PruneSpec(ratio=0.3, round_to=8)
    w = layer_widths(prune_model(tiny_cnn(), PruneOptions(spec=spec, inputs=TINY)).model)
    # 16 * 0.7 = 11.2 -> 8; 32 * 0.7 = 22.4 -> 24 (rounding down would give 16)
    assert w["stem.0"] == 8 and w["dw.3"] == 24
    glob = prune_model(tiny_cnn(), PruneOptions(spec=PruneSpec(ratio=0.4, global_ranking=True), inputs=TINY))
    before, after = layer_widths(tiny_cnn()), layer_widths(glob.model)
    removed = sum(before[n] - after[n] for n in before if n != "head")
    assert 0 < removed and all(after[n] >= 1 for n in after)
    assert glob.report["scope"] == "global"


def test_ignore_pattern_and_bad_pattern():
    result = prune_model(tiny_cnn(), PruneOptions(spec=PruneSpec(ratio=0.5, ignore=("dw.*",)), inputs=TINY))
    w = layer_widths(result.model)
    assert w["dw.3"] == 32 and w["res.0"] == 8
    with pytest.raises(InvalidInputError, match="matches no layer"):
        prune_model(tiny_cnn(), PruneOptions(spec=PruneSpec(ratio=0.5, ignore=("nope.*",)), inputs=TINY))


def test_batchnorm_reestimation_measures_the_data(tiny_data):
    from edgekit.core.data import open_data

    result = prune_model(tiny_cnn(), PruneOptions(spec=PruneSpec(ratio=0.5), inputs=TINY))
    model = result.model
    old_mean = model.stem[1].running_mean.clone()
    batches = Batches(open_data(tiny_data, list(TINY)), list(TINY), 64)
    assert reestimate_batchnorm(model, batches, batch_size=16) == 5
    with torch.no_grad():
        conv_out = model.stem[0](batches.inputs[0])
    expected = conv_out.mean(dim=(0, 2, 3))  # 4 equal batches: the cumulative average is the mean
    assert not torch.allclose(old_mean, model.stem[1].running_mean)
    torch.testing.assert_close(model.stem[1].running_mean, expected, atol=1e-5, rtol=1e-4)
    assert not model.training and model.stem[1].momentum == 0.1


def test_batchnorm_reestimation_reverted_when_it_matches_worse(tiny_data):
    import copy

    from edgekit.core.data import open_data
    from edgekit.stages.prune.recover import reestimate_batchnorm_checked

    teacher = tiny_cnn()
    student = copy.deepcopy(teacher)  # identical: new statistics can only move it away from the teacher
    batches = Batches(open_data(tiny_data, list(TINY)), list(TINY), 64)
    report = reestimate_batchnorm_checked(student, teacher, batches, RecoveryOptions())
    assert report["loss_before"] == 0 and report["loss_after"] > 0 and not report["kept"]
    torch.testing.assert_close(student.stem[1].running_mean, teacher.stem[1].running_mean)


def test_recovery_runs_each_model_state_over_the_data_once(tiny_data):
    """Validation data = calibration data (as in a sweep): the unpruned model is run over it once, the pruned
    one once before BatchNorm re-estimation, once for it and once after (it was 3 and 5 passes)."""
    samples: dict[int, int] = {}

    def count(module, args, _out):  # deep copies carry the hook: teacher and student are counted apart
        if args[0].shape[0] > 1:  # the one-sample trial runs and shape probes are not recovery
            samples[id(module)] = samples.get(id(module), 0) + args[0].shape[0]

    model = tiny_cnn()
    model.register_forward_hook(count)
    result = prune_model(model, PruneOptions(spec=PruneSpec(ratio=0.5), inputs=TINY, calib=str(tiny_data)))
    student = samples.pop(id(result.model))
    assert sorted(samples.values()) == [64]
    assert student == 3 * 64
    bn = result.report["recovery"]["batchnorm"]
    assert bn["layers"] > 0 and "pruned" in result.report["accuracy"]
    accuracy = result.report["accuracy"]
    assert bn["kept"] or accuracy["batchnorm"] == accuracy["pruned"]  # reverted: the pruned model's numbers


def test_distillation_lowers_loss_and_keeps_2_4_pattern(tiny_data):
    from edgekit.core.data import open_data

    teacher = tiny_cnn()
    result = prune_model(teacher, PruneOptions(spec=PruneSpec(ratio=0.5, pattern="2:4"), inputs=TINY))
    student, masks = result.model, result.masks
    assert masks and all(is_2_4_sparse(dict(student.named_modules())[n].weight) for n in masks)
    batches = Batches(open_data(tiny_data, list(TINY)), list(TINY), 64)
    report = distill(student, teacher, batches, RecoveryOptions(epochs=8, lr=3e-3, batch_size=16), masks)
    assert report["kept"] and report["loss_after"] < 0.7 * report["loss_before"]
    assert report["loss"] == "kl" and report["steps"] == 32
    assert all(is_2_4_sparse(dict(student.named_modules())[n].weight) for n in masks)


def test_2_4_skips_layers_without_groups_of_four():
    model = tiny_cnn()
    masks = sparsify_2_4(model)
    # the RGB stem (3 inputs) and the depthwise conv (1 input per group) stay dense
    assert "stem.0" not in masks and "dw.0" not in masks and {"res.0", "dw.3", "head"} <= set(masks)
    zeros = (model.res[0].weight == 0).float().mean().item()
    assert zeros == pytest.approx(0.5)


def test_cli_pt2_roundtrip_matches_onnx_and_reprunes(cli, tmp_path, tiny_data):
    pt2, onnx_path = tmp_path / "p.pt2", tmp_path / "p.onnx"
    common = (f"{MODELS}:tiny_cnn", "--input", "input:1x3x32x32", "--ratio", "0.5", "--calib", tiny_data)
    r = cli("prune", *common, "-o", pt2, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    bn = report["recovery"]["batchnorm"]
    assert bn["layers"] == 5 and bn["samples"] == 64 and report["accuracy"]["samples"] == 64
    assert bn["kept"] == (bn["loss_after"] <= bn["loss_before"])
    assert {"pruned", "batchnorm"} <= set(report["accuracy"])
    r = cli("prune", *common, "-o", onnx_path)
    assert r.exit_code == 0, r.output
    assert "channels per layer" in r.output
    loaded = torch.export.load(str(pt2)).module()
    x = np.load(tiny_data)[:4]
    import onnxruntime as ort

    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(_run(loaded, torch.from_numpy(x)).numpy(), got, atol=1e-4, rtol=1e-4)
    art = Artifact.load(pt2)
    assert art.provenance["pruning"]["ratio"] == 0.5 and art.provenance["pruning"]["kept_whole"] == ["head"]
    assert Artifact.load(onnx_path).provenance["pruning"]["macs"]["ratio"] < 0.3
    # a pruned .pt2 is itself prunable: its graph is rebuilt into modules
    again = tmp_path / "again.pt2"
    r = cli("prune", pt2, "--input", "input:1x3x32x32", "--ratio", "0.5", "-o", again, "--json")
    assert r.exit_code == 0, r.output
    widths = {row["name"]: row["after"] for row in json.loads(r.stdout)["layers"]}
    assert widths["stem.0"] == 4 and widths["head"] == 10
    assert _run(torch.export.load(str(again)).module(), torch.from_numpy(x)).shape == (4, 10)


def test_cli_2_4_pattern_recorded_in_sidecar(cli, tmp_path):
    out = tmp_path / "sparse.pt2"
    r = cli("prune", f"{MODELS}:tiny_cnn", "--input", "input:1x3x32x32", "--pattern", "2:4", "-o", out)
    assert r.exit_code == 0, r.output
    art = Artifact.load(out)
    assert art.provenance["sparsity"] == "2:4" and "res.0" in art.provenance["sparse_layers"]
    state = torch.export.load(str(out)).state_dict
    assert is_2_4_sparse(state["res.0.weight"]) and not is_2_4_sparse(state["stem.0.weight"])


def test_cli_distill_with_profile_latency(cli, tmp_path, tiny_data):
    r = cli("prune", f"{MODELS}:tiny_cnn", "--input", "input:1x3x32x32", "--ratio", "0.5", "--distill", tiny_data,
            "--epochs", "6", "--lr", "3e-3", "--profile", "x86-onnxruntime-cpu", "--min-seconds", "0.05",
            "-o", tmp_path / "d.pt2", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    d = report["recovery"]["distillation"]
    assert d["epochs"] == 6 and d["kept"] and d["loss_after"] == d["loss_trained"] < d["loss_before"]
    assert report["round_to"] == 8  # the profile's default
    lat = report["latency"]
    assert lat["target"] == "onnxruntime" and lat["before"]["p50"] > 0 and lat["after"]["p50"] > 0
    assert lat["speedup"] == pytest.approx(lat["before"]["p50"] / lat["after"]["p50"], rel=1e-2)
    assert "distilled" in report["accuracy"]


def test_taylor_criterion_needs_data_and_uses_it(cli, tmp_path, tiny_data):
    base = (f"{MODELS}:tiny_cnn", "--input", "input:1x3x32x32", "--ratio", "0.5", "--criterion", "taylor")
    r = cli("prune", *base, "-o", tmp_path / "t.pt2")
    assert r.exit_code == 2 and "taylor criterion needs data" in r.output
    r = cli("prune", *base, "--calib", tiny_data, "-o", tmp_path / "t.pt2", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["macs"]["ratio"] < 0.3


def test_onnx_only_model_is_refused(cli, tiny_onnx, tmp_path, tiny_data):
    r = cli("prune", tiny_onnx, "--ratio", "0.3", "-o", tmp_path / "x.pt2")
    assert r.exit_code == 2
    assert "structured pruning needs the PyTorch model" in r.output and "Traceback" not in r.output
    r = cli("deploy", tiny_onnx, "--prune", "0.3", "--profile", "x86-onnxruntime-cpu", "--calib", tiny_data,
            "-o", tmp_path / "dep")
    assert r.exit_code == 2 and "structured pruning needs the PyTorch model" in r.output
    assert not (tmp_path / "dep").exists()
    assert not (tmp_path / "x.pt2").exists()


def test_bad_inputs_exit_2_without_files(cli, tmp_path):
    model = (f"{MODELS}:tiny_cnn", "--input", "input:1x3x32x32")
    for args, message in [
        (("--ratio", "1.5"), "out of range"),
        ((), "nothing to prune"),
        (("--ratio", "0.3", "--ignore", "missing.*"), "matches no layer"),
        (("--ratio", "0.3", "--distill", "nowhere.npy", "--epochs", "1"), "data not found"),
        (("--ratio", "0.3", "--distill", "nowhere.npy"), "--distill needs --epochs"),
    ]:
        r = cli("prune", *model, *args, "-o", tmp_path / "bad.pt2")
        assert r.exit_code == 2, r.output
        assert message in r.output
    r = cli("prune", *model, "--ratio", "0.3", "-o", tmp_path / "bad.tflite")
    assert r.exit_code == 2 and ".pt2" in r.output
    assert list(tmp_path.iterdir()) == []


def test_exported_op_that_cannot_be_pruned_is_named(cli, tmp_path):
    from edgekit.stages.export import save_pt2

    pt2 = tmp_path / "scaled.pt2"
    save_pt2(make_scaled_net(), pt2, [parse_input_spec("x:1x3x8x8")])
    r = cli("prune", pt2, "--input", "x:1x3x8x8", "--ratio", "0.5", "-o", tmp_path / "out.pt2")
    assert r.exit_code == 2, r.output
    assert "parameter 'scale'" in r.output and "mul" in r.output
    assert not (tmp_path / "out.pt2").exists()


def test_torchscript_is_refused(cli, tmp_path):
    ts = tmp_path / "m.ts"
    torch.jit.trace(tiny_cnn(), torch.randn(1, 3, 32, 32)).save(str(ts))
    r = cli("prune", ts, "--input", "input:1x3x32x32", "--ratio", "0.5", "-o", tmp_path / "o.pt2")
    assert r.exit_code == 2 and "TorchScript" in r.output


def test_deploy_prune_reports_ratio(cli, tmp_path, tiny_data):
    out = tmp_path / "dep"
    r = cli("deploy", f"{MODELS}:tiny_cnn", "--input", "input:1x3x32x32", "--prune", "0.5", "--profile",
            "x86-onnxruntime-cpu", "--precision", "fp32", "--calib", tiny_data, "--min-seconds", "0.05", "-o", out)
    assert r.exit_code in (0, 1), r.output
    report = json.loads((out / "report.json").read_text())
    pruning = report["model"]["pruning"]
    assert pruning["ratio"] == 0.5 and pruning["macs"]["ratio"] < 0.3
    assert "top1_agreement" in pruning["agreement_with_unpruned"]
    assert all(row["prune_ratio"] == 0.5 for row in report["results"])
    assert report["results"][0]["status"] == "ok"
    # the reference really is the pruned network
    unpruned_params = sum(p.numel() for p in tiny_cnn().parameters())
    assert report["model"]["params"] < unpruned_params
    assert Artifact.load(out / "model.pt2").provenance["pruning"]["ratio"] == 0.5


def test_profile_without_runtime_exits_3_before_pruning(cli, tmp_path):
    r = cli("prune", f"{MODELS}:tiny_cnn", "--input", "input:1x3x32x32", "--ratio", "0.5",
            "--profile", "x86-nvidia-gpu", "-o", tmp_path / "p.pt2")
    assert r.exit_code == 3, r.output
    assert not (tmp_path / "p.pt2").exists()
