"""A deploy run as one sweep point sees it: int8 is searched only when the sweep asks (--search)."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.core.profiles import Profile
from edgekit.pipeline.deploy_run import DeployRun


@dataclass(frozen=True)
class SweepRun(DeployRun):
    search: bool = False

    def searches(self, profile: Profile) -> bool:
        return self.search and super().searches(profile)
