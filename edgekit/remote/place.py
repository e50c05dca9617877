"""Where a command runs: this machine, or one device over SSH.

validate, bench, compile and deploy each have one code path over a list of places; a place
measures an artifact (its accuracy against FP32 reference outputs computed on this host, its
latency, or both in one load) and builds the deployable file when the target builds on the device.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

from edgekit.core.artifact import Artifact
from edgekit.remote.jobs import RemoteOptions
from edgekit.remote.ssh import Device
from edgekit.stages.bench import BenchOptions


@dataclass(frozen=True)
class MeasureJob:
    """What to measure of one artifact: accuracy when `reference` is given, latency when `bench` is."""

    threads: int | None = None
    profile: object = None  # the Profile: target options, and which device a host run stands in for
    reference: object = None  # ReferenceOutputs of `data` (edgekit.stages.validate), computed on this host
    data: object = None
    bench: BenchOptions | None = None
    feed: dict | None = None  # the benchmark's input (default: random values of the model's inputs)
    paired_probe: bool = False  # time the machine-speed probe after each run (a host report for `check`)
    backend: object = None  # the Backend that loads it on this host (default: the artifact's own target)


@dataclass(frozen=True)
class Measurement:
    accuracy: dict | None  # the accuracy block of report.json
    latency: dict | None  # the latency_ms block
    environment: dict  # the machine it ran on (edgekit.core.hostinfo.environment's keys)
    effective_precision: str | None = None  # what really ran, when it differs from the artifact


class Place(abc.ABC):
    label: str  # how messages name it
    remote: bool  # a device: its own faults must not cost the other places their results

    @abc.abstractmethod
    def where(self, profile=None) -> str:
        """The latency block's `where`."""

    @abc.abstractmethod
    def measure(self, artifact: Artifact, job: MeasureJob) -> Measurement:
        """Run the artifact at this place: its accuracy, its latency, or both (one load on this host)."""

    @abc.abstractmethod
    def compile(self, backend, source: Artifact, profile, out_dir: Path, options) -> Artifact:
        """The deployable file built here from `source` (CompileOptions `options`)."""

    def report_fields(self) -> dict:
        """The keys that name this place in a report row (none for this host: the report describes it)."""
        return {}


@dataclass(frozen=True)
class HostPlace(Place):
    label = "this host"
    remote = False

    def where(self, profile=None) -> str:
        return profile.where() if profile else "host"

    def measure(self, artifact: Artifact, job: MeasureJob) -> Measurement:
        from edgekit.backends.registry import get_backend, target_for_format
        from edgekit.core.hostinfo import environment
        from edgekit.stages.bench import latency_block, time_runner
        from edgekit.stages.validate import validate_runner

        backend = job.backend or get_backend(artifact.target or target_for_format(artifact.format))
        accuracy = latency = None
        with backend.runner(artifact, job.threads, job.profile) as runner:  # one load for both
            if job.reference is not None:
                accuracy = validate_runner(runner, job.reference, job.data, f"validating {artifact.path.name}")
            if job.bench is not None:
                probe = None
                if job.paired_probe:
                    from edgekit.onnx.speedprobe import SpeedProbe

                    probe = SpeedProbe(job.threads)
                timing = time_runner(runner, job.feed, job.bench, probe)
                latency = latency_block(timing, job.bench, job.threads, self.where(job.profile))
            return Measurement(accuracy, latency, environment(), runner.effective_precision)

    def compile(self, backend, source: Artifact, profile, out_dir: Path, options) -> Artifact:
        return backend.compile(source, profile, out_dir, options)


HOST = HostPlace()


@dataclass(frozen=True)
class DevicePlace(Place):
    """A device reached over SSH: the artifact, the standalone runner and the inputs travel there
    (edgekit.remote.jobs); outputs come back and are compared with the reference here."""

    device: Device
    options: RemoteOptions
    remote = True

    @property
    def label(self) -> str:
        return self.device.label

    def where(self, profile=None) -> str:
        return self.device.url

    def report_fields(self) -> dict:
        return {"device": self.device.url}

    def measure(self, artifact: Artifact, job: MeasureJob) -> Measurement:
        from edgekit.remote.bench import bench_on_device, validate_on_device

        runtime_options = dict(job.profile.runtime.options) if job.profile else None
        accuracy = latency = precision = environment = None
        if job.reference is not None:
            got = validate_on_device(artifact, job.reference, job.data, self.device, job.threads, self.options,
                                     runtime_options)
            accuracy, environment = got["accuracy"], got["environment"]
        if job.bench is not None:  # the device runner has no machine-speed probe: paired_probe is not asked
            got = bench_on_device(artifact, self.device, job.threads, job.bench, job.feed, self.options,
                                  runtime_options)
            latency, environment = got["latency_ms"], got["environment"]
            precision = latency.get("effective_precision")
        return Measurement(accuracy, latency, environment, precision)

    def compile(self, backend, source: Artifact, profile, out_dir: Path, options) -> Artifact:
        from edgekit.remote.compile import compile_on_device

        return compile_on_device(source, self.device, options.precision, options.inputs, options.extra, out_dir,
                                 self.options)

    def check(self) -> dict:
        """The device's CPU, memory, OS, Python, numpy and runtimes (`edgekit device check`)."""
        from edgekit.remote.jobs import device_check

        return device_check(self.device, self.options)
