"""The search's first phase: the target's other calibration settings (Backend.calibration_variants), no
layer leaving int8, every one tried in the target's order (a fixed list: the verdict must not depend on load)."""

from __future__ import annotations

from dataclasses import replace

from edgekit.backends.base import QuantOptions
from edgekit.stages.search.run import SearchRun


def try_calibrations(run: SearchRun, quant: QuantOptions) -> int | None:
    """Appends a step per variant; returns the index of the first that meets the budget, else None."""
    for variant in run.backend.calibration_variants(quant, run.inputs.reference.path):
        if run.clock.out():
            break
        variant = dict(variant)
        variant.pop("cost", None)  # how slow it is, for the reader; it is tried all the same
        settings = {**variant.get("extra", {}), **{k: v for k, v in variant.items() if k not in ("extra", "exclude")}}
        label = "calibration " + ", ".join(f"{k}={v}" for k, v in settings.items())
        candidate = apply_variant(quant, variant)
        if variant.get("exclude"):
            label = f"{' and '.join(variant['exclude'])} in float, {label}"
        step = run.attempt(candidate, run.next_folder(), label, variant.get("exclude", ()))
        run.steps.append(step)
        if step["met"]:
            return len(run.steps) - 1
    return None


def apply_variant(quant: QuantOptions, variant: dict) -> QuantOptions:
    changes = {k: v for k, v in variant.items() if k not in ("extra", "exclude")}
    if "exclude" in variant:
        changes["exclude"] = tuple(dict.fromkeys((*quant.exclude, *variant["exclude"])))
    if "extra" in variant:
        changes["extra"] = {**quant.extra, **variant["extra"]}
    return replace(quant, **changes)
