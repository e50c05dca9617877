"""The artifacts one deploy builds, each once: rows of several profiles (and every device) share them."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.backends.base import CompileOptions, QuantOptions
from edgekit.core.artifact import Artifact
from edgekit.core.errors import InvalidInputError
from edgekit.core.profiles import Profile
from edgekit.core.progress import Counter
from edgekit.pipeline.deploy_run import DeployRun
from edgekit.remote.place import HOST
from edgekit.stages.search import SearchInputs, SearchResult, accuracy_aware_int8, search_options


class DeployBuilds:
    """Built artifacts by target x precision x profile options, and accuracy already measured by place x file."""

    def __init__(self, run: DeployRun):
        self.run = run
        self.rows = Counter("row", 0)  # deploy sets the total once the profiles are known
        self._artifacts: dict[tuple, Artifact] = {}
        self._accuracy: dict[tuple, dict] = {}

    def artifact(self, backend, profile: Profile, precision: str) -> Artifact:
        """The deployable file built here: compiled, or quantized (searched under a budget when one applies)."""
        run = self.run
        key = (backend.name, precision, options_key(profile))
        if key in self._artifacts:
            return self._artifacts[key]
        out = run.out_dir / f"{backend.name}-{precision}"
        source = run.source_for(backend)
        if precision == "int8":
            if run.calib is None:
                raise InvalidInputError("int8 needs calibration data", hint="pass --calib DATA")

            def build(q: QuantOptions, folder: Path) -> Artifact:
                art = backend.quantize(source, run.calib, q, folder)
                if art.format != backend.deploy_format:
                    art = backend.compile(art, profile, folder, CompileOptions(precision, tuple(run.inputs)))
                return art

            artifact = self._int8(backend, build, profile, out)
        else:
            artifact = backend.compile(source, profile, out, CompileOptions(precision, tuple(run.inputs),
                                                                             dict(profile.runtime.options)))
        self._artifacts[key] = artifact
        return artifact

    def device_source(self, backend, profile: Profile, precision: str) -> Artifact:
        """For a target that builds on the device: the ONNX each device builds from, made here."""
        run = self.run
        if precision != "int8":
            return run.reference
        key = (backend.name, precision, "source", options_key(profile))
        if key not in self._artifacts:  # the Q/DQ ONNX, quantized on this CPU
            self._artifacts[key] = backend.quantize(run.reference, run.calib, run.quant_for(profile),
                                                    run.out_dir / f"{backend.name}-int8")
        return self._artifacts[key]

    def cpu_fallback(self, backend, profile: Profile, precision: str) -> Artifact:
        """No engine can be built here (TensorRT): the ONNX it would be built from, to check on the CPU."""
        run = self.run
        key = (backend.name, precision, "cpu", options_key(profile))
        if key not in self._artifacts:
            out = run.out_dir / f"{backend.name}-{precision}"
            if precision == "int8" and run.searches(profile):
                def build(q: QuantOptions, folder: Path) -> Artifact:
                    return backend.cpu_fallback(run.reference, run.calib, precision, q, folder)

                self._artifacts[key] = self._int8(backend, build, profile, out)
            else:
                self._artifacts[key] = backend.cpu_fallback(run.reference, run.calib, precision,
                                                            run.quant_for(profile), out)
        return self._artifacts[key]

    def known_accuracy(self, place, artifact: Artifact) -> dict | None:
        return self._accuracy.get((place, artifact.path))

    def remember_accuracy(self, place, artifact: Artifact, accuracy: dict) -> None:
        self._accuracy[(place, artifact.path)] = accuracy

    def _int8(self, backend, build, profile: Profile, out: Path) -> Artifact:
        if not self.run.searches(profile):
            return build(self.run.quant_for(profile), out)
        result = search_in_deploy(self.run, backend, build, profile, out)
        if result.accuracy is not None:  # the search measured the kept file on this run's data, here
            self.remember_accuracy(HOST, result.artifact, result.accuracy)
        return result.artifact


def search_in_deploy(run: DeployRun, backend, build, profile: Profile, out_dir: Path) -> SearchResult:
    """deploy's int8 under a budget: the search against the run's validation data and FP32 outputs."""
    search = search_options(run.accuracy_budget(profile), profile.budgets, run.options.accuracy_search_s)
    inputs = SearchInputs(run.reference, run.source_for(backend), run.calib, run.val, run.ref_outputs,
                          profile.threads(), profile)
    return accuracy_aware_int8(backend, build, run.quant_for(profile), inputs, search, out_dir)


def options_key(profile: Profile) -> str:
    """Profile options as a cache key (options may hold tables, which do not hash)."""
    return json.dumps(profile.runtime.options, sort_keys=True, default=str)
