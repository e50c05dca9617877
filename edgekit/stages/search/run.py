"""One search's state and its steps: build a candidate, measure it against FP32, score it, pick the best."""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgekit.backends.base import Backend, QuantOptions
from edgekit.core.artifact import Artifact
from edgekit.core.errors import EdgekitError
from edgekit.core.progress import stage
from edgekit.stages.bench import BenchOptions, bench_runner
from edgekit.stages.budgets import accuracy_drop
from edgekit.stages.search.options import Builder, SearchInputs, SearchOptions
from edgekit.stages.validate import compare, run_outputs

QUICK_BENCH = BenchOptions(warmup=3, min_runs=20, min_seconds=0.3, max_seconds=5.0)


class Clock:
    def __init__(self, limit_s: float):
        self.end = time.monotonic() + limit_s

    def out(self) -> bool:
        return time.monotonic() >= self.end


@dataclass
class SearchRun:
    """The steps so far (each a dict recorded in the artifact's provenance) and what every step needs."""

    backend: Backend
    build: Builder
    inputs: SearchInputs
    search: SearchOptions
    work: Path  # the candidates' scratch folder
    clock: Clock
    steps: list[dict] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)  # node names the target cannot resolve: not asked again

    def next_folder(self) -> Path:
        return self.work / f"step-{len(self.steps)}"

    def measure(self, label: str, artifact: Artifact, quant: QuantOptions, layers) -> dict:
        """The step of a built candidate: its accuracy against FP32 and a quick latency."""
        start, inputs = time.perf_counter(), self.inputs
        with self.backend.runner(artifact, inputs.threads, inputs.profile) as runner:
            outs = run_outputs(runner, inputs.val, inputs.ref_outputs.output_names, f"checking {label}")
            feed = next(iter(inputs.val)).feed
            latency, _ = bench_runner(runner, feed, QUICK_BENCH)
        acc = compare(inputs.ref_outputs, outs)
        violations = self.search.violations(acc)
        drop, _ = accuracy_drop(acc)
        return {"step": label, "method": quant.method, "float_layers": list(layers), "met": not violations,
                "violations": violations, "accuracy_drop": drop, "top1_agreement": acc.get("top1_agreement"),
                "top1_agreement_confident": acc.get("top1_agreement_confident"),
                "cosine_mean": acc.get("cosine_mean"), "latency_p50_ms": round(latency["p50"], 3),
                "seconds": round(time.perf_counter() - start, 2), "_artifact": artifact, "_quant": quant,
                "_accuracy": acc}

    def attempt(self, quant: QuantOptions, folder: Path, label: str, layers) -> dict:
        """Build and measure one candidate; a failed build is a recorded step, not the end of the search."""
        start = time.perf_counter()
        try:
            with stage(f"search step {len(self.steps)}: {label}"):
                artifact = self.build(quant, folder)
        except EdgekitError as e:
            return {"step": label, "met": False, "float_layers": list(layers), "violations": [e.message],
                    "failed": True}
        return {**self.measure(label, artifact, quant, layers), "build_seconds": round(time.perf_counter() - start, 2)}

    def fallback(self, quant: QuantOptions, groups) -> dict:
        """Build with these groups in float. A name the target cannot resolve (OpenVINO splits an ONNX
        LayerNormalization into ops named otherwise) is dropped, remembered in `unknown`, and the build retried."""
        folder = self.next_folder()
        while True:
            layers = tuple(n for g in groups for n in g if n not in self.unknown)
            patterns = [glob.escape(n) for n in layers]
            excluded = replace(quant, exclude=tuple(dict.fromkeys((*quant.exclude, *patterns))))
            step = self.attempt(excluded, folder, f"{len(layers)} layer(s) in float", layers)
            rejected = [n for n, p in zip(layers, patterns) if step.get("failed") and f"{p}" in step["violations"][0]
                        and "matches no" in step["violations"][0]]
            if not rejected:
                return step
            self.unknown.add(max(rejected, key=len))  # the longest: a name can contain a shorter one

    def skip(self, label: str) -> None:
        self.steps.append({"step": label, "skipped": True, "met": False, "float_layers": [], "violations": []})


def score_step(step: dict) -> tuple:
    """Higher is better: met, then smaller drop, then closer logits, then fewer float layers."""
    if step.get("skipped") or step.get("failed"):
        return (False, float("-inf"), float("-inf"), 0)
    drop = step.get("accuracy_drop")
    return (step["met"], -(drop if drop is not None else 0.0), step.get("cosine_mean") or 0.0,
            -len(step["float_layers"]))


def best_step(steps: list[dict], base_only: bool = False) -> int:
    pool = [i for i, s in enumerate(steps) if not (base_only and s["float_layers"])]
    met = [i for i in pool if steps[i]["met"]]
    if met:  # of the steps that meet the budget: fewest float layers, then the first (a latency tie-break
        return min(met, key=lambda i: (len(steps[i]["float_layers"]), i))  # would follow the machine's load)
    return max(pool, key=lambda i: score_step(steps[i]))


class FirstSamples:
    """The first `n` samples of a data source."""

    def __init__(self, data, n: int):
        self.data, self.n = data, min(n, len(data))

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for i, sample in enumerate(self.data):
            if i >= self.n:
                return
            yield sample
