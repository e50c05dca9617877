#!/usr/bin/env python3
"""edgekit's on-device runner: copied to the device and run there with the device's Python.

Standard library + numpy + the target runtime ONLY: the device has no edgekit. Python 3.8+ (JetPack 5).
    python device_runner.py info        describe the device (JSON on stdout)
    python device_runner.py job.json    run the job (bench | run | build-trt) in the job's folder
Protocol: each stdout line starting with "@@edgekit " is a JSON event (progress, error, result); anything
else is library noise. Results go to ./out/ (result.json, outputs.npz, engine...), fetched by the host.
Exit codes follow edgekit's: 2 bad job, 3 something missing on the device, 4 the runtime failed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import zipfile

PREFIX = "@@edgekit "
RUNTIME_OF_FORMAT = {"onnx": "onnxruntime", "ort": "onnxruntime", "openvino-ir": "openvino",
                     "tflite": "tflite", "tensorrt-engine": "tensorrt"}
PIP_NAME = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tflite": "ai-edge-litert",
            "tensorrt": "tensorrt (from JetPack / NVIDIA's index)", "numpy": "numpy"}


class RunnerError(Exception):
    EXIT = {"bad-job": 2, "missing-dependency": 3, "runtime": 4}

    def __init__(self, kind: str, message: str, **extra):
        super().__init__(message)
        self.kind, self.message, self.extra = kind, message, extra

    @property
    def exit_code(self) -> int:
        return self.EXIT[self.kind]


def emit(event: str, **fields) -> None:
    sys.stdout.write(PREFIX + json.dumps(dict(event=event, **fields)) + "\n")
    sys.stdout.flush()


def need(module: str, what: str):
    """Import a runtime module, or say plainly that this device lacks it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise RunnerError("missing-dependency", f"{what} is not installed for {sys.executable}",
                          package=PIP_NAME.get(what, what), detail=str(e)) from e


# ---- commands ----

def load_model(job: dict):
    """The job's model, loaded by device_models.py (a file beside this one on the device)."""
    from device_models import load_model as load

    return load(job)


def cmd_bench(job: dict) -> dict:
    np = need("numpy", "numpy")
    model = load_model(job)
    feed = next(iter_samples(job, np))
    opts = job["bench"]
    start = time.perf_counter()
    first = model.infer(feed)
    first_ms = (time.perf_counter() - start) * 1e3
    for i in range(opts["warmup"]):
        model.infer(feed)
    emit("progress", phase="measure", done=0, total=opts["min_runs"])
    samples, infer, clock = [], model.infer, time.perf_counter
    began = last_report = clock()
    while True:  # the loop of edgekit.stages.bench.bench_runner, timed the same way
        t0 = clock()
        infer(feed)
        t1 = clock()
        samples.append((t1 - t0) * 1e3)
        elapsed = t1 - began
        if len(samples) >= opts["min_runs"] and elapsed >= opts["min_seconds"]:
            break
        if len(samples) >= opts["max_runs"] or elapsed >= opts["max_seconds"]:
            break
        if t1 - last_report > 0.5:
            emit("progress", phase="measure", done=len(samples), total=opts["min_runs"])
            last_report = t1
    write_outputs([first], model.output_names, np)
    return {"samples_ms": samples, "first_ms": first_ms, "load_ms": model.load_ms, "peak_rss_mb": peak_rss_mb(),
            "effective_precision": model.effective_precision, "output_names": model.output_names}


def cmd_run(job: dict) -> dict:
    """Outputs for every sample of inputs.npz, for validation against the FP32 reference on the host."""
    np = need("numpy", "numpy")
    model = load_model(job)
    total = job["samples"]
    path = os.path.join("out", "outputs.npz")
    with zipfile.ZipFile(path + ".part", "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        last_report = 0.0
        for i, feed in enumerate(iter_samples(job, np)):
            out = model.infer(feed)
            for k, name in enumerate(model.output_names):
                put_array(zf, f"s{i}_{k}", np.asarray(out[name]), np)
            now = time.perf_counter()
            if now - last_report > 0.2 or i + 1 == total:
                emit("progress", phase="run", done=i + 1, total=total)
                last_report = now
    os.replace(path + ".part", path)
    return {"samples": total, "load_ms": model.load_ms, "output_names": model.output_names,
            "effective_precision": model.effective_precision}


def iter_samples(job: dict, np):
    names = [s["name"] for s in job["inputs"]]
    with np.load(job["data"]) as data:  # lazy: one sample in memory at a time
        for i in range(job["samples"]):
            yield {name: data[f"s{i}_{k}"] for k, name in enumerate(names)}


def put_array(zf: zipfile.ZipFile, key: str, array, np) -> None:
    with zf.open(key + ".npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


def write_outputs(outputs: list, names: list, np) -> None:
    with zipfile.ZipFile(os.path.join("out", "outputs.npz"), "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for i, out in enumerate(outputs):
            for k, name in enumerate(names):
                put_array(zf, f"s{i}_{k}", np.asarray(out[name]), np)


def peak_rss_mb() -> float:
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return 0.0


def first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:500]


# ---- what this device is ----

RUNTIME_DISTS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"), "openvino": ("openvino",),
                 "ai-edge-litert": ("ai-edge-litert",), "tflite-runtime": ("tflite-runtime",),
                 "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"), "cuda-python": ("cuda-python",)}
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "ai-edge-litert": "ai_edge_litert",
                   "tflite-runtime": "tflite_runtime", "tensorrt": "tensorrt", "cuda-python": "cuda"}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "asimd", "asimddp",
             "sve", "i8mm")


def device_info() -> dict:
    import platform

    cpu, flags = cpu_model()
    info = {
        "hostname": platform.node(), "model": read_text("/proc/device-tree/model") or read_text(
            "/sys/class/dmi/id/product_name"), "cpu": cpu, "cpu_flags": flags, "arch": platform.machine(),
        "cores": os.cpu_count(), "os": os_name(), "kernel": platform.release(),
        "python": platform.python_version(), "python_path": sys.executable,
        "numpy": dist_version("numpy"), "runtimes": runtime_versions(), "memory_mb": meminfo("MemTotal"),
        "memory_available_mb": meminfo("MemAvailable"), "cpu_governor": read_text(
            "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_mhz": {k: int(v) // 1000 for k, v in (("cur", read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")),
                                                  ("max", read_text("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")))
                    if v and v.isdigit()},
        "temperatures_c": temperatures(), "trtexec": find_trtexec(),
    }
    l4t = read_text("/etc/nv_tegra_release")
    if l4t:  # a Jetson: its power mode and clocks decide its latency
        info["jetson"] = {"l4t": l4t.splitlines()[0], "nvpmodel": command_output(["nvpmodel", "-q"]),
                          "jetson_clocks": command_output(["jetson_clocks", "--show"])}
    throttled = command_output(["vcgencmd", "get_throttled"])
    if throttled:  # a Raspberry Pi: under-voltage and thermal throttling flags
        info["throttled"] = throttled
    return info


def cpu_model():
    import platform

    name, flags = "", set()
    for line in (read_text("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware", "cpu model") and not name:
            name = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return name or platform.processor() or platform.machine(), sorted(f for f in CPU_FLAGS if f in flags)


def os_name() -> str:
    import platform

    for line in (read_text("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return f"{platform.system()} {platform.release()}"


def dist_version(*dists: str):
    from importlib import metadata

    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def runtime_versions() -> dict:
    """Version of each runtime that is installed (by package metadata, or an importable module for apt installs)."""
    import importlib.util

    found = {}
    for name, dists in RUNTIME_DISTS.items():
        version = dist_version(*dists)
        if version is None and importlib.util.find_spec(RUNTIME_MODULES[name]) is not None:
            version = "installed"
        if version:
            found[name] = version
    return found


def meminfo(key: str):
    for line in (read_text("/proc/meminfo") or "").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    return None


def temperatures() -> dict:
    found, base = {}, "/sys/class/thermal"
    for zone in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        raw = read_text(os.path.join(base, zone, "temp"))
        if raw and raw.lstrip("-").isdigit():
            found[read_text(os.path.join(base, zone, "type")) or zone] = round(int(raw) / 1000, 1)
    return found


def find_trtexec():
    return shutil.which("trtexec") or next(
        (p for p in ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec") if os.access(p, os.X_OK)), None)


def read_text(path: str):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip().strip("\x00") or None
    except OSError:
        return None


def command_output(argv: list, timeout: float = 10.0):
    """A short tool's output, or None when it is absent or refuses (jetson_clocks --show needs root)."""
    import subprocess

    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                             universal_newlines=True, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 else f"unavailable (exit {out.returncode}): {text.splitlines()[-1] if text else ''}"


# ---- lifecycle: the run folder disappears with the host's connection ----

def watch_host(run_dir: str) -> None:
    """The host keeps our stdin open for the whole run; EOF means the connection is gone (a drop, a kill,
    a host timeout): remove the run folder and stop, so nothing is left behind on the device."""

    def watch():
        try:  # os.read, not sys.stdin: a buffered read holds a lock that aborts interpreter shutdown
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        remove_run_dir(run_dir)
        os._exit(70)

    threading.Thread(target=watch, daemon=True).start()


def watch_deadline(run_dir: str, seconds: float) -> None:
    """A last resort when the host can no longer reach us and no EOF arrives (a half-open connection)."""
    timer = threading.Timer(seconds, lambda: (remove_run_dir(run_dir), os._exit(71)))
    timer.daemon = True
    timer.start()


def remove_run_dir(run_dir: str) -> None:
    if os.path.basename(run_dir).startswith("edgekit-run."):  # never anything but our own folder
        shutil.rmtree(run_dir, ignore_errors=True)


def cmd_build_trt(job: dict) -> dict:
    from device_runner_trt import build_engine

    return build_engine(job)


COMMANDS = {"bench": cmd_bench, "run": cmd_run, "build-trt": cmd_build_trt}


def main(argv: list) -> int:
    sys.modules.setdefault("device_runner", sys.modules[__name__])  # device_runner_trt imports this one
    if len(argv) < 2:
        sys.stderr.write("usage: device_runner.py info | JOB.json\n")
        return 2
    if argv[1] == "info":
        emit("info", info=device_info())
        return 0
    run_dir = os.path.dirname(os.path.abspath(argv[1]))
    os.chdir(run_dir)
    with open(argv[1]) as f:
        job = json.load(f)
    with open("runner.pid", "w") as f:
        f.write(str(os.getpid()))
    if job.get("watch_host", True):
        watch_host(run_dir)
    if job.get("deadline_seconds"):
        watch_deadline(run_dir, float(job["deadline_seconds"]))
    os.makedirs("out", exist_ok=True)
    try:
        command = COMMANDS.get(job.get("command"))
        if command is None:
            raise RunnerError("bad-job", f"unknown command {job.get('command')!r}")
        result = command(job)
        result["environment"] = device_info()
        with open(os.path.join("out", "result.json"), "w") as f:
            json.dump(result, f)
        emit("done")
        return 0
    except RunnerError as e:
        emit("error", kind=e.kind, message=e.message, **e.extra)
        return e.exit_code
    except MemoryError:
        emit("error", kind="runtime", message="out of memory on the device")
        return 4
    except Exception as e:  # a runtime's own failure: one line to the host, the traceback on stderr
        import traceback

        traceback.print_exc()
        emit("error", kind="runtime", message=f"{type(e).__name__}: {first_line(e)}")
        return 4


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the stdin watcher thread must not hold up (or abort) the exit
