"""`edgekit sweep`: pruning x precision x calibration method x profile, built on Ray (or in-process), benchmarked,
the Pareto front and the recommended point per profile."""

from edgekit.pipeline.sweep.main import SweepResult, sweep
from edgekit.pipeline.sweep.options import SweepRequest

__all__ = ["SweepRequest", "SweepResult", "sweep"]
