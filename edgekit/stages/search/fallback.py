"""The search's second phase: per-layer float fallback.

Layers are ranked by the SQNR their int8 activations lose, on the target's own model
(Backend.layer_sensitivity); the top few are re-ranked by the accuracy each gains kept in float
alone; then the worst 1, 2, 4... are kept in float (a layer's producer and consumers, so the
tensor itself stays float) until the budget is met, and the fewest that meet it found by bisection.
"""

from __future__ import annotations

from edgekit.backends.base import QuantOptions, SensitivityTask
from edgekit.core.artifact import Artifact
from edgekit.core.progress import stage
from edgekit.onnx.mixed_range import kept_float_names
from edgekit.stages.search.run import FirstSamples, SearchRun, best_step, score_step


def float_fallback(run: SearchRun, base_step: dict, base: QuantOptions) -> int:
    """Appends the ranking and fallback steps; returns the index of the step to keep."""
    ranked = ranked_groups(run, base_step.get("_artifact"), base)
    ranked, single, measured = rerank_by_gain(run, base, base_step, ranked)
    if single is not None:  # one layer in float already meets the budget
        return single
    counts = group_counts(ranked, run.search.max_float_layers)
    lo, hi = 0, None  # groups: lo known too few, hi known enough
    if measured:  # the best group alone was measured: not enough
        counts, lo = [k for k in counts if k > 1], 1
    for k in counts:
        if run.clock.out():
            break
        step = run.fallback(base, ranked[:k])
        run.steps.append(step)
        if step["met"]:
            hi = k
            break
        lo = k
    while hi is not None and hi - lo > 1 and not run.clock.out():  # fewer float layers run faster
        mid = (lo + hi) // 2
        step = run.fallback(base, ranked[:mid])
        run.steps.append(step)
        lo, hi = (lo, mid) if step["met"] else (mid, hi)
    return best_step(run.steps)


def ranked_groups(run: SearchRun, int8: Artifact | None, quant: QuantOptions) -> list[tuple[str, ...]]:
    """Float-fallback units, most sensitive first: node groups that keep one tensor in float."""
    inputs, samples = run.inputs, run.search.sensitivity_samples
    task = SensitivityTask(int8, quant, inputs.reference, inputs.source, inputs.calib,
                           FirstSamples(inputs.calib, samples), samples, run.work)
    with stage(f"search step {len(run.steps)}: ranking layers by the SQNR their int8 loses"):
        ranking = run.backend.layer_sensitivity(task)
    # mixed-range ops (edgekit.onnx.mixed_range) are float in every build already: not proposed again
    already = kept_float_names(int8.provenance) if int8 is not None else set()
    groups, seen = [], set(already)
    for row in ranking.rows:
        if row.sqnr_lost_db <= 0:
            break
        if row.name in already:
            continue
        group = tuple(n for n in row.float_nodes if n in ranking.names and n not in seen)
        if group:
            groups.append(group)
            seen.update(group)
    run.steps.append({"step": "sensitivity ranking", "met": False, "float_layers": [], "violations": [],
                      "ranking": [{"name": r.name, "op": r.op, "sqnr_lost_db": r.sqnr_lost_db,
                                   "channel_sqnr_db": r.channel_sqnr_db} for r in ranking.rows[:10]],
                      "already_float": sorted(already), "seconds": None, "skipped": True})
    return groups


def rerank_by_gain(run: SearchRun, base: QuantOptions, base_step: dict, ranked: list) -> tuple[list, int | None, bool]:
    """The SQNR ranking's top few, re-ordered by the accuracy each gains kept in float alone.

    SQNR lost says where int8 adds noise, not how much of it reaches the outputs: each candidate is
    built with only itself in float and measured (always, so that the steps do not depend on how fast
    the machine is today). Returns the new ranking,
    the index of a step that already meets the budget (None if none does) and whether any was measured."""
    candidates = [g for g in ranked if len(g) <= run.search.max_float_layers][:run.search.gain_candidates]
    if len(candidates) < 2:
        return ranked, None, False
    gains = {}
    for group in candidates:
        if run.clock.out():
            return ranked, None, bool(gains)
        step = run.fallback(base, [group])
        step["step"] = f"gain check: {group[0]} in float"
        run.steps.append(step)
        if step["met"]:
            return ranked, len(run.steps) - 1, True
        gains[group] = score_step(step)
    order = sorted(candidates, key=lambda g: gains.get(g, (False, float("-inf"))), reverse=True)
    return order + [g for g in ranked if g not in gains], None, True


def group_counts(groups: list, max_layers: int) -> list[int]:
    """Group counts to try: 1, 2, 4, ... while the float layers stay within the cap."""
    sizes, total, counts, k = [len(g) for g in groups], 0, [], 1
    allowed = 0
    for s in sizes:
        if total + s > max_layers:
            break
        total += s
        allowed += 1
    while k < allowed:
        counts.append(k)
        k *= 2
    if allowed:
        counts.append(allowed)
    return counts
