"""`edgekit prune`: structured channel pruning of a PyTorch model, recovered without labels, measured, saved."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.core.profiles import Profile
from edgekit.core.tempdirs import temp_files_in
from edgekit.pipeline.arguments import DataOptions, as_preprocess, as_specs, check_choice


@dataclass(frozen=True, kw_only=True)
class PruneRequest(DataOptions):
    """The options of `edgekit prune`, named as its long options (`--global` is `global_ranking`)."""

    ratio: float = 0.0
    criterion: str = "l2"
    global_ranking: bool = False
    ignore: tuple = ()
    round_to: int | None = None
    pattern: str | None = None
    calib: str | None = None
    distill: str | None = None
    epochs: int = 0
    lr: float = 5e-4
    batch_size: int = 16
    ce_weight: float = 0.0
    max_samples: int = 1024
    val: str | None = None
    profile: object = None  # a name, a TOML path or a Profile
    min_seconds: float = 1.0
    weights: str | None = None
    trust_pickle: bool = False
    output: str

    def __post_init__(self):
        check_choice("criterion", self.criterion, ("l1", "l2", "bn-scale", "taylor"))
        if self.pattern is not None:
            check_choice("pattern", self.pattern, ("2:4",))


@dataclass(frozen=True)
class PruneReport:
    """What pruning did: channels, params, MACs, recovery, agreement and latency before/after."""

    report: dict

    def to_dict(self) -> dict:
        return self.report


def prune(model, request: PruneRequest) -> PruneReport:
    """Its temporary files (and every library's) beside the output file (core/tempdirs.py)."""
    with temp_files_in(Path(request.output).parent):
        return _prune(model, request)


def _prune(model, request: PruneRequest) -> PruneReport:
    from edgekit.core.arrays import parse_consts
    from edgekit.stages.bench import BenchOptions
    from edgekit.stages.prune.recover import RecoveryOptions
    from edgekit.stages.prune.run import PruneOptions, prune_file, reject_onnx
    from edgekit.stages.prune.structure import PruneSpec

    r = request
    reject_onnx(str(model))  # before parsing anything else: the one thing that cannot work
    spec = PruneSpec(ratio=r.ratio, criterion=r.criterion, global_ranking=r.global_ranking, ignore=tuple(r.ignore),
                     round_to=r.round_to, pattern=r.pattern)
    profile = r.profile.source if isinstance(r.profile, Profile) else r.profile  # pruning loads it by name
    options = PruneOptions(
        spec=spec, inputs=as_specs(r.inputs), calib=r.calib, distill=r.distill, val=r.val,
        preprocess=as_preprocess(r.preprocess), labels=r.labels, consts=parse_consts(r.consts), profile=profile,
        bench=BenchOptions(min_seconds=r.min_seconds),
        recovery=RecoveryOptions(epochs=r.epochs, lr=r.lr, batch_size=r.batch_size, ce_weight=r.ce_weight,
                                 max_samples=r.max_samples),
    )
    return PruneReport(prune_file(str(model), Path(r.output), options, r.weights, r.trust_pickle))
