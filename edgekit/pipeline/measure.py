"""`edgekit validate` and `edgekit bench`: an artifact measured at each place, this host or every device
of --device (the FP32 reference always runs here); a fleet gets one row per device."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.pipeline.arguments import (
    DataOptions,
    DeviceOptions,
    TaskOptions,
    as_artifact,
    as_data,
    as_preprocess,
    as_profile,
    as_specs,
    merge_inputs,
)
from edgekit.remote.fleet import Outcome, PlacesResult, raise_single_failure, run_at
from edgekit.remote.place import MeasureJob


class ValidateResult(PlacesResult):
    """`.accuracy`, `.violations` and `.passed` of the (first) place; with devices, `.rows` has every device's."""

    @property
    def accuracy(self) -> dict | None:
        return self.value["accuracy"] if self.value else None

    @property
    def violations(self) -> list[str]:
        return self.value["violations"] if self.value else []

    @property
    def passed(self) -> bool:
        return not self.failures and all(o.value["passed"] for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        missed = any(o.value and o.value["violations"] for o in self.outcomes)
        return super().exit_code or (1 if missed else 0)


class BenchResult(PlacesResult):
    """`.latency` (the latency_ms block) of the (first) place; with devices, `.rows` has every device's."""

    @property
    def latency(self) -> dict | None:
        return self.value["latency_ms"] if self.value else None


@dataclass(frozen=True, kw_only=True)
class ValidateRequest(DataOptions, DeviceOptions, TaskOptions):
    """The options of `edgekit validate`, named as its long options."""

    reference: object  # the FP32 ONNX: a path or an Artifact
    data: object  # a path or a data source
    threads: int | None = None
    limit: int | None = None
    accuracy_budget: float | None = None
    min_agreement: float | None = None
    min_cosine: float | None = None
    min_task_metric: float | None = None  # in the task's units: mAP, mIoU, nn agreement, top-1 (0..1)
    min_output_cosine: float | None = None  # every output on its own


@dataclass(frozen=True, kw_only=True)
class BenchRequest(DeviceOptions):
    """The options of `edgekit bench`, named as its long options."""

    profile: object = None
    threads: int | None = None  # default: the profile's
    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 2.0
    inputs: tuple = ()


def validate(artifact, request: ValidateRequest) -> ValidateResult:
    """Reference outputs once here, the artifact at every place, accuracy and budget verdicts per place."""
    from edgekit.stages.budgets import accuracy_violations
    from edgekit.stages.validate import reference_outputs

    r = request
    choice = r.task_choice(r.labels)  # before any work
    art, ref = as_artifact(artifact), as_artifact(r.reference)
    specs = merge_inputs(ref.inputs, as_specs(r.inputs))
    data = as_data(r.data, specs, as_preprocess(r.preprocess), r.labels, r.limit, r.consts)
    device = r.device_args()
    places = device.places()
    job = MeasureJob(threads=r.threads, reference=reference_outputs(ref, data, r.threads, choice),
                     data=data)

    def at(place) -> dict:
        measured = place.measure(art, job)
        violations = accuracy_violations(measured.accuracy, r.min_agreement, r.accuracy_budget, r.min_cosine,
                                         r.min_task_metric, r.min_output_cosine)
        where = {"environment": measured.environment} if device.given else {}
        return {"accuracy": measured.accuracy, **where, "violations": violations, "passed": not violations}

    return ValidateResult(_run(places, at), device.given)


def bench(artifact, request: BenchRequest) -> BenchResult:
    """Latency at every place: warm-up, then runs until both a minimum count and duration are met."""
    from edgekit.core.tensors import random_feed
    from edgekit.stages.bench import BenchOptions

    r = request
    prof = as_profile(r.profile)
    art = as_artifact(artifact)
    threads = r.threads or (prof.threads() if prof else None)
    options = BenchOptions(warmup=r.warmup, min_runs=r.min_runs, min_seconds=r.min_seconds)
    feed = random_feed(list(merge_inputs(art.inputs, as_specs(r.inputs)))) if art.inputs else None
    device = r.device_args()
    job = MeasureJob(threads=threads, profile=prof, bench=options, feed=feed)

    def at(place) -> dict:
        measured = place.measure(art, job)
        return {"latency_ms": measured.latency, "environment": measured.environment}

    return BenchResult(_run(device.places(), at), device.given)


def _run(places, job) -> tuple[Outcome, ...]:
    outcomes = run_at(places, job)
    raise_single_failure(outcomes)
    return tuple(outcomes)
