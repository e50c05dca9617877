"""What one deploy is asked (DeployOptions) and what every one of its rows is built from (DeployRun)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from edgekit.backends.base import QuantOptions
from edgekit.core.artifact import Artifact
from edgekit.core.data import Preprocess
from edgekit.core.profiles import Profile
from edgekit.core.tensors import TensorSpec
from edgekit.remote.place import HOST
from edgekit.stages.bench import BenchOptions


@dataclass(frozen=True)
class DeployOptions:
    profiles: tuple  # profile names, TOML paths or Profiles
    out_dir: Path
    calib: str | None = None
    val: str | None = None
    preprocess: Preprocess | None = None
    labels: str | None = None
    consts: tuple = ()  # "NAME=VALUE": inputs every sample shares
    inputs: tuple[TensorSpec, ...] = ()
    weights: str | None = None
    trust_pickle: bool = False
    precisions: tuple[str, ...] = ()  # default: fp32 + each profile's precision
    accuracy_budget: float | None = None
    quant: QuantOptions = field(default_factory=QuantOptions)
    bench: BenchOptions = field(default_factory=BenchOptions)
    val_limit: int | None = None
    skip_unavailable: bool = False  # demo: a missing runtime is a skipped row, not exit 3
    prune: float | None = None  # fraction of channels removed before export (PyTorch models)
    devices: object = None  # edgekit.remote.fleet.Fleet: validate and bench on these devices over SSH, one row each
    require_engine: bool = False  # tensorrt without TensorRT here: exit 3 instead of a CPU-checked row
    accuracy_search_s: float | None = None  # time bound of the --accuracy-budget search (None: its default)
    task: str | None = None  # edgekit.tasks name or pkg.mod:fn (default: a profile's task, else guessed)
    masks: str | None = None  # segmentation ground truth folder


@dataclass(frozen=True)
class DeployRun:
    """The reference, data and FP32 outputs every row of one deploy is built from and measured against."""

    reference: Artifact  # reference.onnx in the output folder
    inputs: tuple[TensorSpec, ...]
    calib: object  # data source, or None
    val: object  # data source, or None (then no accuracy is measured)
    ref_outputs: object  # edgekit.stages.validate.ReferenceOutputs of `val`, or None
    options: DeployOptions
    out_dir: Path

    @property
    def places(self) -> list:
        """Where the artifacts are measured: every device of --device/--devices, else this host."""
        return self.options.devices.places() if self.options.devices else [HOST]

    @property
    def on_devices(self) -> bool:
        return bool(self.options.devices)

    def source_for(self, backend) -> Artifact:
        """What the target converts from: the PyTorch .pt2 when it prefers one and there is one."""
        pt2 = self.out_dir / "model.pt2"
        if backend.prefers_pytorch and pt2.exists():
            return Artifact.load(pt2)
        return self.reference

    def quant_for(self, profile: Profile) -> QuantOptions:
        """The run's int8 options with the profile's target options."""
        return replace(self.options.quant, extra={**self.options.quant.extra, **profile.runtime.options})

    def accuracy_budget(self, profile: Profile) -> float | None:
        """--accuracy-budget, else the profile's max_accuracy_drop."""
        budget = self.options.accuracy_budget
        return budget if budget is not None else profile.budgets.max_accuracy_drop

    def searches(self, profile: Profile) -> bool:
        """int8 is searched when a budget applies to it: --accuracy-budget or the profile's accuracy budgets."""
        budgets = profile.budgets
        wanted = (self.options.accuracy_budget, *budgets.accuracy_keys())
        return self.ref_outputs is not None and any(v is not None for v in wanted)

    def bench_feed(self) -> dict | None:
        """A real sample to benchmark on when there is one (else each place makes a random feed)."""
        return next(iter(self.val)).feed if self.val is not None else None

    def relative(self, path: Path) -> str:
        """A path as report.json names it: relative to the output folder when inside it."""
        return str(path.relative_to(self.out_dir) if path.is_relative_to(self.out_dir) else path)
