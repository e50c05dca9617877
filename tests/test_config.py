"""edgekit.toml: loading, errors that name key/file/line, CLI overrides, and the example config."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from edgekit.core.errors import InvalidInputError
from edgekit.pipeline.config import key_lines, load_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "ci" / "edgekit.toml"


@pytest.fixture
def project(tmp_path, tiny_onnx, tiny_data) -> Path:
    """A project folder with a model, data and an edgekit.toml, the way a user lays it out."""
    root = tmp_path / "proj"
    (root / "models").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(tiny_onnx, root / "models" / "tiny.onnx")
    shutil.copy(tiny_data, root / "data" / "calib.npy")
    (root / "edgekit.toml").write_text(
        '[model]\nsource = "models/tiny.onnx"\n\n'
        '[data]\ncalib = "data/calib.npy"\n\n'
        '[deploy]\nprofiles = ["x86-onnxruntime-cpu"]\nprecisions = ["fp32", "int8"]\noutput = "out"\n\n'
        '[bench]\nwarmup = 3\nmin_runs = 20\nmin_seconds = 0.2\n\n'
        '[check]\nbaseline = "baseline.json"\nmax_latency_increase = "15%"\n'
    )
    return root


def test_key_lines_tables_dotted_multiline_and_strings():
    text = (
        '# comment = not a key\n'               # 1
        '[model]\n'                              # 2
        'source = "a.onnx"  # trailing\n'       # 3
        'inputs = [\n'                           # 4
        '  "x = 1",\n'                           # 5 inside an array: not a key
        ']\n'                                    # 6
        'notes = """\n'                          # 7
        'fake = 2\n'                             # 8 inside a multi-line string
        '"""\n'                                  # 9
        'data.calib = "c"\n'                     # 10 dotted key inside [model]
        '\n'
        '[ check ]\n'                            # 12
        '"max_accuracy_drop" = 0.5\n'            # 13 quoted key
        'inline = { a = 1, b = [1, 2] }\n'       # 14
        'after = 1\n'                            # 15
    )
    lines = key_lines(text)
    assert lines[("model",)] == 2 and lines[("model", "source")] == 3 and lines[("model", "inputs")] == 4
    assert ("model", "x") not in lines and ("model", "fake") not in lines
    assert lines[("model", "notes")] == 7 and lines[("model", "data", "calib")] == 10
    assert lines[("check",)] == 12 and lines[("check", "max_accuracy_drop")] == 13
    assert lines[("check", "inline")] == 14 and lines[("check", "after")] == 15


def test_paths_are_relative_to_the_config_file(project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the project folder
    config = load_config(project / "edgekit.toml")
    assert Path(config.model) == project / "models" / "tiny.onnx"
    assert Path(config.get("data", "calib")) == project / "data" / "calib.npy"
    assert config.output == project / "out"
    assert config.check.baseline == project / "baseline.json"
    assert config.check.max_latency_increase == pytest.approx(0.15)
    (project / "profiles").mkdir()
    (project / "profiles" / "board.toml").write_text('name = "board"\n[runtime]\ntarget = "onnxruntime"\n')
    text = (project / "edgekit.toml").read_text()
    (project / "edgekit.toml").write_text(text.replace('["x86-onnxruntime-cpu"]', '["x86-onnxruntime-cpu", "profiles/board.toml"]'))
    profiles = load_config(project / "edgekit.toml").get("deploy", "profiles")
    assert profiles == ("x86-onnxruntime-cpu", str(project / "profiles" / "board.toml"))


def test_module_factory_is_not_a_path(tmp_path):
    cfg = tmp_path / "edgekit.toml"
    cfg.write_text('[model]\nsource = "edgekit.pipeline.demo:make_efficientnet_lite0"\ninputs = ["input:1x3x224x224"]\n')
    config = load_config(cfg)
    assert config.model == "edgekit.pipeline.demo:make_efficientnet_lite0"
    assert config.get("model", "inputs")[0].shape == (1, 3, 224, 224)
    (tmp_path / "net.py").write_text("def make():\n    pass\n")
    cfg.write_text('[model]\nsource = "net.py:make"\n')
    assert load_config(cfg).model == f"{tmp_path / 'net.py'}:make"


BAD = [
    ('[model]\nsource = "m.onnx"\n\n[data]\ncalbi = "x"\n', 5, "unknown key 'data.calbi'"),
    ('[model]\nsource = "m.onnx"\n[deploy]\nprofiles = ["x86-onnxruntime-cpu"]\n[surprise]\nx = 1\n', 5,
     "unknown section 'surprise'"),
    ('[bench]\nwarmup = 2\nmin_seconds = "fast"\n', 3, "'bench.min_seconds' = 'fast' is not valid"),
    ('[deploy]\nprofiles = ["x86-onnxruntime-cpu"]\nprecisions = ["fp32", "int4"]\n', 3, "int4"),
    ('[deploy]\nprofiles = ["no-such-board"]\n', 2, "unknown profile 'no-such-board'"),
    ('[model]\ninputs = ["input:1xAx3"]\n', 2, "'model.inputs'"),
    ('[check]\nmax_latency_increase = "10"\n', 2, "ambiguous"),
    ('[prune]\nratio = 1.5\n', 2, "'prune.ratio' = 1.5 is not valid"),
    ('[data]\npreprocess = "imagenet,sise=224"\n', 2, "unknown preprocessing key 'sise'"),
    ('[data.preprocess]\npreset = "inception"\nsqueeze = 1\n', 1, "not 'squeeze'"),
    ('[model]\ntrust_pickle = "yes"\n', 2, "expected true or false"),
    ('model = "x.onnx"\n', 1, "'model' must be a table"),
]


@pytest.mark.parametrize("text, line, message", BAD)
def test_bad_config_exits_2_naming_key_file_and_line(text, line, message, tmp_path, cli):
    cfg = tmp_path / "edgekit.toml"
    cfg.write_text(text)
    with pytest.raises(InvalidInputError) as err:
        load_config(cfg)
    assert f"{cfg}:{line}:" in err.value.message and message in err.value.message
    r = cli("deploy", "-c", cfg)
    assert r.exit_code == 2
    assert f"{cfg}:{line}:" in r.stderr and message in r.stderr
    assert "Traceback" not in r.output and not (tmp_path / "out").exists()


def test_invalid_toml_names_the_file_and_line(tmp_path, cli):
    cfg = tmp_path / "edgekit.toml"
    cfg.write_text('[model]\nsource = "x.onnx\n')
    r = cli("deploy", "-c", cfg)
    assert r.exit_code == 2 and str(cfg) in r.stderr and "line 2" in r.stderr


def test_missing_config_and_missing_model(tmp_path, cli):
    r = cli("deploy", "-c", tmp_path / "nope.toml")
    assert r.exit_code == 2 and "config file not found" in r.stderr
    r = cli("deploy", "--profile", "x86-onnxruntime-cpu", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "no model given" in r.stderr
    cfg = tmp_path / "edgekit.toml"
    cfg.write_text('[model]\nsource = "m.onnx"\n')
    r = cli("deploy", "-c", cfg)
    assert r.exit_code == 2 and "no device profile" in r.stderr


def test_deploy_from_config_with_command_line_overrides(project, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("deploy", "-c", project / "edgekit.toml", "--precision", "fp32", "--min-seconds", "0.1", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads((project / "out" / "report.json").read_text())
    assert [x["precision"] for x in report["results"]] == ["fp32"]  # --precision beat [deploy] precisions
    lat = report["results"][0]["latency_ms"]
    assert lat["warmup"] == 3  # [bench] warmup kept: only min_seconds was overridden
    assert lat["runs"] >= 20
    assert report["model"]["validation"]["data"] == str(project / "data" / "calib.npy")
    # the config's own values when nothing overrides them, and -o moves the output
    r = cli("deploy", "-c", project / "edgekit.toml", "-o", tmp_path / "elsewhere")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "elsewhere" / "report.json").read_text())
    assert [x["precision"] for x in report["results"]] == ["fp32", "int8"]


def test_check_reads_report_and_baseline_from_config(project, cli):
    assert cli("deploy", "-c", project / "edgekit.toml", "--precision", "fp32").exit_code == 0
    r = cli("check", "-c", project / "edgekit.toml")
    assert r.exit_code == 0, r.output
    assert "does not exist yet" in r.stderr  # first run: no baseline recorded
    r = cli("baseline", "update", project / "out" / "report.json", "-o", project / "baseline.json")
    assert r.exit_code == 0
    r = cli("check", "-c", project / "edgekit.toml", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["baseline"] == str(project / "baseline.json")
    assert {c["metric"] for c in result["checks"]} >= {"budgets", "latency_p50_ms", "top1_agreement"}


@pytest.mark.slow
def test_example_config_runs_end_to_end_on_the_demo_model(cli, tmp_path):
    """examples/ci/edgekit.toml as shipped (one profile, short benchmark): deploy, baseline, check."""
    pytest.importorskip("efficientnet_lite_pytorch")
    out = tmp_path / "out"
    r = cli("deploy", "-c", EXAMPLE, "--min-seconds", "0.5", "-o", out)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert [(x["profile"], x["precision"], x["status"]) for x in report["results"]] == [
        ("x86-onnxruntime-cpu", "fp32", "ok"), ("x86-onnxruntime-cpu", "int8", "ok")]
    assert report["model"]["validation"]["samples"] == 120
    r = cli("baseline", "update", out / "report.json", "-o", tmp_path / "baseline.json")
    assert r.exit_code == 0
    junit = tmp_path / "junit.xml"
    r = cli("check", "-c", EXAMPLE, out / "report.json", "--baseline", tmp_path / "baseline.json", "--junit", junit)
    assert r.exit_code == 0, r.output
    assert junit.read_text().count("<testcase") >= 6


def test_example_workflows_run_deploy_and_check():
    import yaml

    gh = yaml.safe_load((EXAMPLE.parent / "github-actions.yml").read_text())
    steps = gh["jobs"]["edgekit"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    assert 'edgekit deploy -c "$EDGEKIT_CONFIG"' in runs and "edgekit check -c" in runs and "--junit" in runs
    assert any(s.get("uses", "").startswith("actions/upload-artifact") and s.get("if") == "always()" for s in steps)
    assert gh["env"]["EDGEKIT_CONFIG"] == "examples/ci/edgekit.toml"
    gl = yaml.safe_load((EXAMPLE.parent / "gitlab-ci.yml").read_text())["edgekit"]
    assert any("edgekit deploy -c" in line for line in gl["script"])
    assert any("edgekit check -c" in line for line in gl["script"])
    assert gl["artifacts"]["reports"]["junit"] == "edgekit-junit.xml" and gl["artifacts"]["when"] == "always"
    # the config they point at loads, and its relative data paths exist in this checkout
    config = load_config(EXAMPLE)
    assert os.path.isdir(config.get("data", "calib")) and os.path.isdir(config.get("data", "val"))
