"""`edgekit deploy` as it is called: its options (named as the long options), merged with an edgekit.toml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.pipeline.arguments import (
    DataOptions,
    DeviceOptions,
    TaskOptions,
    as_model_spec,
    as_preprocess,
    as_specs,
    as_tuple,
    check_choice,
)
from edgekit.pipeline.compile import PRECISIONS
from edgekit.pipeline.deploy import DeployResult, deploy
from edgekit.pipeline.deploy_run import DeployOptions
from edgekit.pipeline.quantize import METHODS


@dataclass(frozen=True, kw_only=True)
class DeployRequest(DataOptions, DeviceOptions, TaskOptions):
    """The options of `edgekit deploy`; MODEL and any of them may come from `config` (edgekit.toml)."""

    config: str | None = None
    profiles: tuple = ()  # names, TOML paths or Profiles
    calib: object = None
    val: object = None  # default: the calibration data
    precisions: tuple = ()  # default: fp32 and each profile's
    accuracy_budget: float | None = None
    search_time: float | None = None
    method: str = "auto"
    weights: str | None = None
    trust_pickle: bool = False
    min_seconds: float = 2.0
    prune: float | None = None
    require_engine: bool = False
    output: str | None = None

    def __post_init__(self):
        check_choice("method", self.method, METHODS)
        for precision in as_tuple(self.precisions):
            check_choice("precision", precision, PRECISIONS)

    def deploy_options(self) -> DeployOptions:
        from edgekit.backends.base import QuantOptions
        from edgekit.stages.bench import BenchOptions

        device = self.device_args()
        return DeployOptions(
            profiles=as_tuple(self.profiles), out_dir=Path(self.output) if self.output else None, calib=self.calib,
            val=self.val, preprocess=as_preprocess(self.preprocess), labels=self.labels, inputs=as_specs(self.inputs),
            consts=as_tuple(self.consts),
            weights=self.weights, trust_pickle=self.trust_pickle, precisions=as_tuple(self.precisions),
            accuracy_budget=self.accuracy_budget, quant=QuantOptions(method=self.method),
            bench=BenchOptions(min_seconds=self.min_seconds), prune=self.prune,
            devices=device.fleet() if device.given else None, require_engine=self.require_engine,
            accuracy_search_s=self.search_time, task=self.task, masks=self.masks,
        )


def deploy_request(model, request: DeployRequest, given: set[str]) -> DeployResult:
    """Deploy MODEL; `given` names the options the caller set, which win over the config's values."""
    from edgekit.pipeline.config import load_config, merge_deploy_options

    options = request.deploy_options()
    config = load_config(request.config) if request.config else None
    model, options = merge_deploy_options(config, as_model_spec(model), options, given)
    return deploy(model, options)
