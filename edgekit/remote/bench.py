"""Benchmark and validate an artifact on a device over SSH, with the same report blocks as local runs.

The runner sends back raw latency samples; the block is built here with stages.bench.latency_block,
so a device row and a host row mean the same thing. Outputs come back as NPZ and are compared with the
FP32 reference on the host (validate.compare).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

from edgekit.core.errors import InvalidInputError
from edgekit.core.progress import progress_iter
from edgekit.core.tensors import random_feed
from edgekit.remote.emulated.chroot import emulation_of
from edgekit.remote.jobs import RemoteOptions, artifact_job, read_outputs, run_job, write_samples
from edgekit.remote.ssh import Device
from edgekit.stages.bench import BenchOptions, Timing, latency_block


def bench_feed(artifact, batch: int = 1) -> dict:
    """The deterministic random feed of a local `edgekit bench`, built from the artifact's inputs."""
    if not artifact.inputs:
        raise InvalidInputError(f"{artifact.path.name} has no input description for a device run",
                                hint="give --input NAME:DIMS, or keep the artifact's .json sidecar beside it")
    return random_feed(list(artifact.inputs), batch=batch)


def bench_on_device(artifact, device: Device, threads: int | None, options: BenchOptions, feed: dict | None,
                    remote: RemoteOptions, runtime_options: dict | None = None) -> dict:
    """{"latency_ms": block (bench.py schema), "environment": the device's, "outputs": [arrays of the feed]}."""
    feed = feed if feed is not None else bench_feed(artifact, options.batch)
    job, files = artifact_job(artifact, threads, runtime_options)
    names = list(feed)
    job.update(command="bench", data="inputs.npz", samples=1, bench=_bench_fields(options),
               inputs=_input_fields(artifact, names))
    with tempfile.TemporaryDirectory(prefix="edgekit-remote-") as tmp:
        tmp = Path(tmp)
        write_samples(tmp / "inputs.npz", [feed], names)
        files["inputs.npz"] = tmp / "inputs.npz"
        fetched = run_job(device, job, files, tmp / "out", remote, progress=("measuring", options.min_runs))
        res = fetched.result
        outputs = read_outputs(tmp / "out" / "outputs.npz", 1, len(res["output_names"]))[0]
    timing = Timing(res["samples_ms"], res["first_ms"], res["load_ms"], res["peak_rss_mb"],
                    res.get("effective_precision"))
    emulated = emulation_of(res["environment"])  # qemu's latency says nothing about the board's
    block = latency_block(timing, options, threads, f"emulated aarch64 ({emulated['cpu']})" if emulated else device.url)
    if emulated:
        block.update(emulated=True, device=device.url)
    return {"latency_ms": block, "environment": device_environment(res["environment"], device),
            "outputs": dict(zip(res["output_names"], outputs)), "attempts": fetched.attempts}


def outputs_on_device(artifact, device: Device, data, threads: int | None, remote: RemoteOptions,
                      runtime_options: dict | None = None) -> dict:
    """Run every sample of `data` on the device: {"outputs": [[arrays per output] per sample], ...}."""
    job, files = artifact_job(artifact, threads, runtime_options)
    with tempfile.TemporaryDirectory(prefix="edgekit-remote-") as tmp:
        tmp = Path(tmp)
        names = [s.name for s in getattr(data, "inputs", None) or artifact.inputs]
        count = write_samples(tmp / "inputs.npz", _feeds(data, remote.show_progress), names)
        job.update(command="run", data="inputs.npz", samples=count, inputs=_input_fields(artifact, names))
        files["inputs.npz"] = tmp / "inputs.npz"
        fetched = run_job(device, job, files, tmp / "out", remote, progress=("running", count))
        res = fetched.result
        outputs = read_outputs(tmp / "out" / "outputs.npz", count, len(res["output_names"]))
    return {"outputs": outputs, "output_names": res["output_names"], "load_ms": res["load_ms"],
            "effective_precision": res.get("effective_precision"), "attempts": fetched.attempts,
            "environment": device_environment(res["environment"], device)}


def validate_on_device(artifact, ref, data, device: Device, threads: int | None, remote: RemoteOptions,
                       runtime_options: dict | None = None) -> dict:
    """The accuracy block of the artifact run on the device, against FP32 reference outputs from the host."""
    from edgekit.stages.validate import compare, ordered_outputs

    got = outputs_on_device(artifact, device, data, threads, remote, runtime_options)
    outs = [ordered_outputs(dict(zip(got["output_names"], sample)), ref.output_names) for sample in got["outputs"]]
    accuracy = compare(ref, outs)
    if emulation_of(got["environment"]):  # ARM kernels on the emulated device: how far from this host's x86 ones
        from edgekit.remote.emulated.divergence import arm_vs_x86

        accuracy["arm_vs_x86"] = arm_vs_x86(artifact, ref, data, outs, accuracy, threads)
    return {"accuracy": accuracy, "environment": got["environment"]}


def device_environment(info: dict, device: Device) -> dict:
    """The report's environment block for a device: the host's keys, describing the device."""
    keys = ("cpu", "cpu_flags", "arch", "cores", "os", "python", "runtimes", "model", "memory_mb", "kernel", "numpy",
            "cpu_governor", "temperatures_c", "jetson", "throttled")
    env = {k: info[k] for k in keys if k in info and info[k] not in (None, {}, [])}
    env["device"] = device.url
    if emulated := emulation_of(info):
        env["emulated"] = emulated
    return env


def _bench_fields(options: BenchOptions) -> dict:
    fields = asdict(options)
    return {k: fields[k] for k in ("warmup", "min_runs", "min_seconds", "max_runs", "max_seconds")}


def _input_fields(artifact, names: list[str]) -> list[dict]:
    """Inputs in feed order; the ONNX-layout shapes let the runner map NCHW to an NHWC model."""
    by_name = {s.name: s.to_dict() for s in artifact.inputs}
    return [by_name.get(n, {"name": n, "shape": None, "dtype": "float32"}) for n in names]


def _feeds(data, show: bool):
    samples = progress_iter(data, total=len(data), description="packing inputs") if show else data
    for sample in samples:
        yield sample.feed
