"""The jobs of a sweep and their keys: one source per pruning ratio (shared by every target), one point per
ratio x target group x precision x method (a target group: profiles of one target with the same options, which
share the artifact), benchmarked on each profile of its group."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.core.profiles import Profile
from edgekit.pipeline.deploy_builds import options_key
from edgekit.pipeline.sweep.jobs import PointJob, SourceJob, SweepSpec
from edgekit.pipeline.sweep.options import Grid
from edgekit.pipeline.sweep.store import content_key, model_sha, path_sha


@dataclass(frozen=True)
class Plan:
    sources: tuple[SourceJob, ...]  # the first is the unpruned model: every point is validated against it
    points: tuple[PointJob, ...]
    groups: dict  # PointJob.key -> the profiles it is benchmarked on

    def settings(self, point: PointJob, ratio_of: dict) -> dict:
        return {"key": point.key, "prune_ratio": ratio_of[point.source_key], "precision": point.precision,
                "calib_method": point.method}


def target_groups(profiles: list[Profile]) -> list[list[Profile]]:
    """Profiles that would build the same file (same target, same options), in the order given."""
    groups: dict[tuple, list[Profile]] = {}
    for p in profiles:
        groups.setdefault((p.runtime.target, options_key(p)), []).append(p)
    return list(groups.values())


def make_plan(spec: SweepSpec, grid: Grid, profiles: list[Profile]) -> Plan:
    data = content_key(path_sha(spec.calib), path_sha(spec.val), repr(spec.preprocess), path_sha(spec.labels),
                       list(spec.consts), spec.val_limit, spec.task, path_sha(spec.masks))
    model = content_key(model_sha(spec.model, spec.weights), [s.to_dict() for s in spec.inputs])
    distill = path_sha(spec.distill)
    ratios = (0.0, *[r for r in grid.prune if r != 0.0])  # the unpruned source always: the reference of the rest
    sources = {r: SourceJob(content_key("source", model, data, r, distill if r else None), r) for r in ratios}
    points, groups, by_target = [], {}, target_groups(profiles)  # one list per group: points share it
    for ratio in grid.prune:
        for group in by_target:
            lead = group[0]
            for precision in grid.precisions:
                for method in grid.calib_methods if precision == "int8" else (None,):
                    key = content_key("point", sources[ratio].key, lead.runtime.target, options_key(lead), precision,
                                      method, spec.search, spec.accuracy_budget, data)
                    job = PointJob(key, sources[ratio].key, lead, precision, method)
                    points.append(job)
                    groups[key] = group
    return Plan(tuple(sources.values()), tuple(points), groups)


def bench_key(point_key: str, profile: Profile, min_seconds: float) -> str:
    return content_key("bench", point_key, profile.name, profile.source, options_key(profile), profile.runtime.threads,
                       min_seconds)
