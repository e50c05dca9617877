from pathlib import Path

import pytest

from edgekit.backends.registry import load_profile
from edgekit.core.errors import InvalidInputError
from edgekit.core.profiles import builtin_names

REQUIRED = {"local", "x86-onnxruntime-cpu", "x86-openvino-cpu", "raspberry-pi-5", "android-arm64",
            "jetson-orin-nano", "x86-nvidia-gpu"}


def test_builtin_profiles_load():
    assert REQUIRED <= set(builtin_names())
    for name in builtin_names():
        p = load_profile(name)
        assert p.name == name and p.description
    assert load_profile("raspberry-pi-5").runtime.threads == 4


def test_stand_in_is_reported():
    assert load_profile("raspberry-pi-5").where() == "host (standing in for raspberry-pi-5)"
    assert load_profile("local").where() == "host"


def test_unknown_profile_lists_builtins():
    with pytest.raises(InvalidInputError) as e:
        load_profile("raspberry-pi-9")
    assert "unknown profile 'raspberry-pi-9'" in e.value.message and "raspberry-pi-5" in e.value.hint


def test_unknown_key_names_key_and_file(tmp_path: Path):
    f = tmp_path / "my.toml"
    f.write_text('name = "my"\n[runtime]\ntarget = "onnxruntime"\nthreadz = 2\n')
    with pytest.raises(InvalidInputError) as e:
        load_profile(str(f))
    assert "runtime.threadz" in e.value.message and str(f) in e.value.message
    f.write_text('name = "my"\ncolour = "red"\n')
    with pytest.raises(InvalidInputError, match="unknown profile key 'colour'"):
        load_profile(str(f))


def test_bad_values_are_rejected(tmp_path: Path):
    f = tmp_path / "p.toml"
    f.write_text('[runtime]\ntarget = "coreml"\n')
    with pytest.raises(InvalidInputError, match="not a known target"):
        load_profile(str(f))
    f.write_text('[runtime]\nthreads = "four"\n')
    with pytest.raises(InvalidInputError, match="bad value"):
        load_profile(str(f))
    f.write_text('[runtime\n')
    with pytest.raises(InvalidInputError, match="invalid TOML"):
        load_profile(str(f))
    f.write_text('[runtime]\nthreads = -2\n')
    with pytest.raises(InvalidInputError, match="runtime.threads = -2"):
        load_profile(str(f))


def test_an_output_folder_that_is_a_file_is_refused_before_any_work(cli, tiny_onnx, tiny_data, tmp_path):
    import edgekit

    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    r = cli("quantize", tiny_onnx, "--target", "onnxruntime", "--calib", tiny_data, "-o", taken)
    assert r.exit_code == 2 and "is a file" in r.output
    with pytest.raises(InvalidInputError, match="is an existing file"):
        edgekit.deploy(tiny_onnx, profiles=["x86-onnxruntime-cpu"], calib=tiny_data, output=str(taken))
    assert taken.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
