"""The Python API mirrors the CLI one to one: same names, same defaults, same JSON; README's example runs."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

import edgekit
from edgekit.cli.main import main
from edgekit.pipeline.compile import CompileRequest
from edgekit.pipeline.deploy_request import DeployRequest
from edgekit.pipeline.measure import BenchRequest, ValidateRequest
from edgekit.pipeline.prune import PruneRequest
from edgekit.pipeline.quantize import QuantizeRequest

README = Path(__file__).resolve().parent.parent / "README.md"
# api function -> (its command, the dataclass its **options are checked into; None: its own keywords)
API = {"export": ("export", None), "prune": ("prune", PruneRequest), "quantize": ("quantize", QuantizeRequest),
       "compile": ("compile", CompileRequest), "validate": ("validate", ValidateRequest),
       "bench": ("bench", BenchRequest), "deploy": ("deploy", DeployRequest), "check": ("check", None)}
# a keyword that is not its long option (underscored, plural when repeated), and why
RENAMED = {"--global": "global_ranking",  # `global` is a Python keyword
           "--devices": "devices_file",  # `devices` is the repeated --device
           "--exclude": "exclude", "--ignore": "ignore"}  # lists that read as verbs stay singular


def readme_example() -> str:
    section = README.read_text().split("### Python API", 1)[1].split("\n### ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def keywords(name: str) -> dict:
    """The api function's keyword options and their defaults (dataclasses.MISSING when required)."""
    _, request = API[name]
    if request is not None:
        return {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(request)}
    params = inspect.signature(getattr(edgekit, name)).parameters.values()
    return {p.name: dataclasses.MISSING if p.default is inspect.Parameter.empty else p.default
            for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def long_name(option: click.Option) -> str:
    long = max(option.opts, key=len)
    if long in RENAMED:
        return RENAMED[long]
    name = long.lstrip("-").replace("-", "_")
    return name + "s" if option.multiple else name


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_example(), str(README), "exec"), scope)
    int8, accuracy, latency = scope["int8"], scope["accuracy"], scope["latency"]
    assert int8.artifact.precision == "int8" and int8.artifact.path == Path("out") / "tiny.int8.onnx"
    assert int8.artifact.provenance["from"] == "tiny.onnx" and scope["fp32"].precision == "fp32"
    assert accuracy.passed and accuracy.exit_code == 0 and accuracy.accuracy["cosine_mean"] > 0.99
    assert latency.latency["runs"] >= 50 and latency.latency["threads"] == 1 and latency.latency["where"] == "host"


@pytest.mark.parametrize("name", sorted(API))
def test_keywords_are_the_commands_long_options_with_their_defaults(name):
    command = main.commands[API[name][0]]
    options = [p for p in command.params if isinstance(p, click.Option) and p.name != "as_json"]
    assert [long_name(p) for p in options] == [p.name for p in options]  # the command names them so
    defaults = command.make_context(name, [], resilient_parsing=True).params  # what the command gets untyped
    cli = {p.name: dataclasses.MISSING if p.required else defaults[p.name] for p in options}
    assert keywords(name) == cli


def test_every_api_function_is_positional_model_then_keywords():
    for name in API:
        params = list(inspect.signature(getattr(edgekit, name)).parameters.values())
        assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, name
        assert all(p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD) for p in params[1:])


def test_to_dict_is_the_commands_json(cli, tiny_onnx, tiny_data, tmp_path):
    calls = [
        (("quantize", tiny_onnx, "--calib", tiny_data, "--max-samples", 16, "-o", tmp_path / "q"),
         lambda: edgekit.quantize(tiny_onnx, calib=tiny_data, max_samples=16, output=tmp_path / "q")),
        (("compile", tiny_onnx, "--ort-format", "-o", tmp_path / "c"),
         lambda: edgekit.compile(str(tiny_onnx), ort_format=True, output=str(tmp_path / "c"))),
        (("validate", tmp_path / "q" / "tiny.int8.onnx", "--reference", tiny_onnx, "--data", tiny_data,
          "--min-agreement", 1.01),
         lambda: edgekit.validate(tmp_path / "q" / "tiny.int8.onnx", reference=tiny_onnx, data=str(tiny_data),
                                  min_agreement=1.01)),
    ]
    for args, call in calls:
        r = cli(*args, "--json")
        result = call()
        assert json.loads(r.stdout) == json.loads(json.dumps(result.to_dict())), args[0]
        assert r.exit_code == getattr(result, "exit_code", 0), args[0]
    assert result.violations and not result.passed  # validate: 1.01 agreement cannot be met


def test_bench_and_check_results_have_the_commands_shape(cli, tiny_onnx, tmp_path):
    r = cli("bench", tiny_onnx, "--min-runs", 10, "--min-seconds", 0.1, "--json")
    got = edgekit.bench(edgekit.Artifact.load(tiny_onnx), min_runs=10, min_seconds=0.1).to_dict()
    here = json.loads(r.stdout)
    assert set(got) == set(here) == {"latency_ms", "environment"} and set(got["latency_ms"]) == set(here["latency_ms"])
    assert got["environment"] == here["environment"]


def test_objects_are_accepted_for_paths(tiny_onnx, tiny_data):
    art = edgekit.Artifact.load(tiny_onnx)
    data = edgekit.open_data(tiny_data, art.inputs, limit=8)
    result = edgekit.validate(art, reference=art, data=data, threads=1)
    assert result.accuracy["samples"] == 8 and result.accuracy["max_abs_err"] == 0.0
    profile = edgekit.load_profile("raspberry-pi-5")
    latency = edgekit.bench(art, profile=profile, inputs=[art.inputs[0].with_batch(1)], min_runs=5, min_seconds=0.05)
    assert latency.latency["where"] == "host (standing in for raspberry-pi-5)" and latency.latency["threads"] == 4


def test_errors_are_the_commands(tiny_onnx, tiny_data, tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword argument 'calibration'"):
        edgekit.quantize(tiny_onnx, calibration=tiny_data, output=tmp_path)
    with pytest.raises(TypeError, match="missing required keyword argument 'calib'"):
        edgekit.quantize(tiny_onnx, output=tmp_path)
    with pytest.raises(edgekit.InvalidInputError, match="'--method': 'fast' is not one of") as e:
        edgekit.quantize(tiny_onnx, calib=tiny_data, method="fast", output=tmp_path)
    assert e.value.exit_code == 2
    with pytest.raises(edgekit.InvalidInputError, match="unknown profile 'pi-zero'"):
        edgekit.deploy(tiny_onnx, profiles="pi-zero", output=tmp_path / "d")
    with pytest.raises(edgekit.InvalidInputError, match="no model given"):
        edgekit.deploy(profiles=["x86-onnxruntime-cpu"], output=tmp_path / "d")


def test_import_edgekit_loads_no_runtime_and_no_numpy():
    code = ("import sys, edgekit; edgekit.quantize, edgekit.deploy, edgekit.EdgekitError; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'numpy', 'onnx', 'onnxruntime', 'torch', 'openvino', 'nncf', 'tensorflow', 'ai_edge_litert', "
            "'litert_torch', 'ai_edge_quantizer', 'tensorrt', 'modelopt', 'onnx2tf'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
