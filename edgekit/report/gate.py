"""`edgekit check`: every row of a report against its profile budgets and a stored baseline.

Accuracy is deterministic (same data in the same order, the same FP32 reference), so a drop is a
plain difference in points. Latency is not: it is judged from both runs' samples (median ratio
with a bootstrap confidence interval) and, when both runs carry them, relative to the paired
machine-speed probe (speedprobe.py), so a busier CI runner is not a slower model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgekit.core.errors import InvalidInputError

BASELINE_SCHEMA = "edgekit.baseline/1"
REPORT_SCHEMA = "edgekit.report/1"
VERDICTS = ("pass", "warn", "fail", "skip")
# The probe cancels most of a machine-speed change but not all of it: this share of the change
# (in log terms) widens the latency allowance. A tiny model can feel contention about twice as much
# as the probe (measured on a loaded 2-core VM: probe +18%, an unchanged 0.09 ms model +44%, so
# +30% left after the probe), so three quarters of the change are allowed for; a model slower on a
# machine that did not change is still caught (benchmarks/gate_noise.py prints both rates).
PROBE_RESIDUAL = 0.75
# Beyond this change in the probe's speed the two runs saw different machines in effect (another
# tenant, throttling): the probe cancels only part of such a change (measured: probe +40%, a tiny
# unchanged model +97%; probe +18%, model +44%), so a slowdown is reported as a warning, never
# blamed on the model.
MACHINE_DRIFT_LIMIT = 0.10
# Contention the probe does not feel (a CPU hog thrashing the caches): for each unit of the machine's
# CPU time other processes used during either run (machine_busy.py), this much more slowdown counts as
# noise, a warning rather than a failure. Measured on the 2-core VM beside `stress-ng --cpu 2` (others
# ~0.65): an unchanged 0.036 ms model up to +18.7% relative to the probe, against a limit of +14.4%.
BUSY_RESIDUAL = 0.30


@dataclass(frozen=True)
class GateOptions:
    max_accuracy_drop: float = 0.5  # points (top-1 agreement / task metric, in percent)
    max_latency_increase: float = 0.10  # fraction of the baseline median
    confidence: float = 0.95
    max_cosine_drop: float = 0.002  # an output's mean cosine may fall this much below the baseline's (float noise)
    resamples: int = 2000
    seed: int = 0  # the bootstrap is seeded: the same two reports always get the same verdict


@dataclass(frozen=True)
class MetricCheck:
    """One metric of one report row: what the table, JUnit and JSON outputs show."""

    profile: str
    precision: str
    metric: str
    baseline: float | None
    current: float | None
    delta: str
    verdict: str  # pass | warn | fail | skip
    message: str = ""
    unit: str = ""


@dataclass
class CheckResult:
    checks: list[MetricCheck]
    warnings: list[str] = field(default_factory=list)
    baseline_source: str | None = None

    @property
    def failures(self) -> list[MetricCheck]:
        return [c for c in self.checks if c.verdict == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"passed": self.passed, "baseline": self.baseline_source,
                "failed": [f"{c.profile} {c.precision} {c.metric}" for c in self.failures],
                "warnings": self.warnings, "checks": [asdict(c) for c in self.checks]}


def parse_increase(text: str | float) -> float:
    """`10%` or `0.1` -> 0.1; a bare number above 1 is refused (10 could mean 10% or 1000%)."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise InvalidInputError(f"max latency increase '{text}' is not a number", hint="e.g. 10%") from None
    if not raw.endswith("%") and value > 1:
        raise InvalidInputError(f"max latency increase '{text}' is ambiguous", hint=f"write {raw}% or {value / 100:g}")
    if value < 0 or not math.isfinite(value):
        raise InvalidInputError(f"max latency increase '{text}' must be 0% or more")
    return value


def load_json_report(path: str | Path, what: str = "report") -> dict:
    """A report.json or a baseline file; exit 2 with the reason when it is neither."""
    import json

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{what} not found: {path}",
                                hint="run `edgekit deploy` first" if what == "report" else
                                "record one with `edgekit baseline update report.json -o baseline.json`")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("schema") not in (REPORT_SCHEMA, BASELINE_SCHEMA) \
            or not isinstance(data.get("results"), list):
        raise InvalidInputError(f"{path} is not an edgekit report or baseline (schema {REPORT_SCHEMA})")
    return data


def make_baseline(report: dict, source: str) -> dict:
    """The baseline file: the report's rows and the environment they were measured on."""
    if report.get("schema") == BASELINE_SCHEMA:
        report = {k: v for k, v in report.items() if k != "baseline"}
    return {
        "schema": BASELINE_SCHEMA,
        "baseline": {"from": source, "report_created": report.get("created"),
                     "edgekit_version": report.get("edgekit_version")},
        "created": report.get("created"),
        "edgekit_version": report.get("edgekit_version"),
        "model": report.get("model", {}),
        "environment": report.get("environment", {}),
        "results": [r for r in report["results"] if r.get("status") == "ok"],
    }


def check_report(report: dict, baseline: dict | None, options: GateOptions = GateOptions(),
                 baseline_source: str | None = None) -> CheckResult:
    result = CheckResult([], baseline_source=baseline_source)
    base_rows = {_key(r): r for r in (baseline or {}).get("results", [])}
    same_cpu = accuracy_comparable = True
    if baseline is not None:
        same_cpu = _compare_environments(baseline.get("environment", {}), report.get("environment", {}), result)
        accuracy_comparable = _compare_validation(baseline.get("model", {}), report.get("model", {}), result)
    for row in report["results"]:
        base = base_rows.pop(_key(row), None)
        result.checks += _row_checks(row, base, baseline is not None, same_cpu, accuracy_comparable, options)
    for profile, precision in base_rows:
        result.warnings.append(f"{profile} {precision} is in the baseline but not in the report")
    return result


def _key(row: dict) -> tuple[str, str]:
    return row["profile"], row["precision"]


def _compare_environments(base: dict, cur: dict, result: CheckResult) -> bool:
    same = (base.get("cpu"), base.get("cores")) == (cur.get("cpu"), cur.get("cores"))
    if not same:
        result.warnings.append(
            f"the baseline was measured on {base.get('cpu')} ({base.get('cores')} cores), this report on "
            f"{cur.get('cpu')} ({cur.get('cores')} cores): latency differences are warnings, not failures")
    b_rt, c_rt = base.get("runtimes", {}), cur.get("runtimes", {})
    changed = [f"{k} {b_rt.get(k)} -> {c_rt.get(k)}" for k in sorted(set(b_rt) | set(c_rt)) if b_rt.get(k) != c_rt.get(k)]
    if changed:
        result.warnings.append("runtime versions differ from the baseline: " + ", ".join(changed))
    return same


def _compare_validation(base: dict, cur: dict, result: CheckResult) -> bool:
    """Accuracy is only comparable on the same validation set (same samples, same order)."""
    bv, cv = base.get("validation") or {}, cur.get("validation") or {}
    if bv and cv and bv.get("samples") != cv.get("samples"):
        result.warnings.append(f"the validation data differs from the baseline's ({bv.get('samples')} vs "
                               f"{cv.get('samples')} samples): accuracy changes are warnings, not failures")
        return False
    return True


def _row_checks(row, base, have_baseline, same_cpu, accuracy_comparable, options) -> list[MetricCheck]:
    profile, precision = _key(row)
    if row.get("status") != "ok":
        verdict = "skip" if row.get("status") == "skipped" else "fail"
        return [MetricCheck(profile, precision, "deploy", None, None, "", verdict, row.get("error") or "")]
    violations = row.get("violations") or []
    checks = [MetricCheck(profile, precision, "budgets", None, float(len(violations)), "",
                          "fail" if violations else "pass",
                          "; ".join(violations) if violations else "within the profile budgets", "violations")]
    checks.append(_latency_check(row, base, have_baseline, same_cpu, options))
    checks += _accuracy_checks(row, base, have_baseline, accuracy_comparable, options)
    return checks


# ---- accuracy: deterministic, a difference in points -------------------------------------------

def accuracy_metrics(acc: dict | None) -> dict[str, float]:
    """The accuracy figures `check` compares, in percent: the task metric (with labels) and agreement."""
    if not acc or acc.get("error"):
        return {}
    found = {}
    if (tm := acc.get("task_metric")) and tm.get("value") is not None:
        found[tm["name"]] = tm["value"] * 100
    if acc.get("top1_agreement") is not None:
        found["top1_agreement"] = acc["top1_agreement"] * 100
        if acc.get("top1_agreement_confident") is not None:  # what DESIGN.md judges int8 by
            found["top1_agreement_confident"] = acc["top1_agreement_confident"] * 100
    elif acc.get("cosine_mean") is not None:  # not a classifier: output similarity to FP32
        found["cosine_mean"] = acc["cosine_mean"] * 100
    return found


def _accuracy_checks(row, base, have_baseline, comparable, options) -> list[MetricCheck]:
    profile, precision = _key(row)
    acc = row.get("accuracy")
    if acc and acc.get("error"):
        return [MetricCheck(profile, precision, "accuracy", None, None, "", "fail", acc["error"])]
    current = accuracy_metrics(acc)
    before = accuracy_metrics((base or {}).get("accuracy"))
    checks = []
    for metric, value in current.items():
        if metric not in before:
            why = "no baseline" if not have_baseline else "not in the baseline"
            checks.append(MetricCheck(profile, precision, metric, None, round(value, 3), "", "skip", why, "%"))
            continue
        drop = before[metric] - value
        delta = f"{value - before[metric] + 0.0:+.2f} pt"
        if drop > options.max_accuracy_drop:
            verdict = "fail" if comparable else "warn"
            message = f"{metric} fell {drop:.2f} points (max {options.max_accuracy_drop:g})"
        else:
            verdict, message = "pass", f"within {options.max_accuracy_drop:g} points of the baseline"
        checks.append(MetricCheck(profile, precision, metric, round(before[metric], 3), round(value, 3), delta,
                                  verdict, message, "%"))
    return checks + _output_cosine_checks(row, base, have_baseline, comparable, options)


def output_cosines(acc: dict | None) -> dict[str, float]:
    """Every output's mean cosine vs FP32 (a broken second output cannot hide behind the first)."""
    outputs = (acc or {}).get("outputs") or {}
    return {name: o["cosine_mean"] for name, o in outputs.items() if o.get("cosine_mean") is not None}


def _output_cosine_checks(row, base, have_baseline, comparable, options) -> list[MetricCheck]:
    profile, precision = _key(row)
    before = output_cosines((base or {}).get("accuracy"))
    checks = []
    for name, value in output_cosines(row.get("accuracy")).items():
        metric = f"cosine {name}"
        if name not in before:
            why = "no baseline" if not have_baseline else "not in the baseline"
            checks.append(MetricCheck(profile, precision, metric, None, round(value, 6), "", "skip", why))
            continue
        fell = before[name] - value
        if fell > options.max_cosine_drop:
            verdict = "fail" if comparable else "warn"
            message = f"output {name} cosine fell {fell:.4f} (max {options.max_cosine_drop:g})"
        else:
            verdict, message = "pass", f"within {options.max_cosine_drop:g} of the baseline"
        checks.append(MetricCheck(profile, precision, metric, round(before[name], 6), round(value, 6),
                                  f"{value - before[name] + 0.0:+.4f}", verdict, message))
    return checks


# ---- latency: noisy, judged with the runs' spread ----------------------------------------------

@dataclass(frozen=True)
class LatencyComparison:
    ratio: float  # current / baseline median (relative to the probe when both have one)
    low: float  # bootstrap confidence interval of the ratio
    high: float
    machine_ratio: float | None  # current / baseline probe median: how much faster/slower the machine was
    limit: float  # the ratio above which the row regressed
    verdict: str
    message: str
    busy: float = 0.0  # the larger share of the CPU other processes used in either run
    fail_limit: float = 0.0  # above `limit` but at most this on a busy machine: a warning


def _latency_check(row, base, have_baseline, same_cpu, options) -> MetricCheck:
    profile, precision = _key(row)
    cur = row.get("latency_ms") or {}
    before = (base or {}).get("latency_ms") or {}
    if not cur.get("p50"):
        return MetricCheck(profile, precision, "latency_p50_ms", before.get("p50"), None, "", "skip",
                           "no latency measured", "ms")
    if not before.get("p50"):
        why = "no baseline" if not have_baseline else "not in the baseline"
        return MetricCheck(profile, precision, "latency_p50_ms", None, cur["p50"], "", "skip", why, "ms")
    cmp = compare_latency(before, cur, options)
    verdict = cmp.verdict
    message = f"p50 {before['p50']:.4g} -> {cur['p50']:.4g} ms (raw {cur['p50'] / before['p50'] - 1:+.1%}); {cmp.message}"
    if verdict == "fail" and (not same_cpu or before.get("where") != cur.get("where")):
        verdict, message = "warn", message + " (measured on a different machine than the baseline)"
    delta = f"{cmp.ratio - 1:+.1%}"
    return MetricCheck(profile, precision, "latency_p50_ms", before["p50"], cur["p50"], delta, verdict, message, "ms")


def compare_latency(base: dict, cur: dict, options: GateOptions = GateOptions()) -> LatencyComparison:
    """Is `cur` slower than `base` by more than the allowed increase, beyond both runs' noise?

    Fails when the median ratio is above the limit (a slowdown that matters) and its bootstrap
    confidence interval excludes "no change" (a slowdown that is real); above the limit but
    within the noise is a warning.
    """
    b, c = _series(base), _series(cur)
    machine = None
    if b.probe is not None and c.probe is not None:
        machine = float(np.median(c.probe) / np.median(b.probe))
        b_vals, c_vals = b.samples / b.probe, c.samples / c.probe
        basis = "relative to the machine-speed probe"
    else:
        b_vals, c_vals = b.samples, c.samples
        basis = "raw medians"
    ratio = float(np.median(c_vals) / np.median(b_vals))
    low, high = _bootstrap_ratio(b_vals, c_vals, options)
    allowance = options.max_latency_increase
    if machine is not None:
        allowance += PROBE_RESIDUAL * abs(math.log(machine))
    limit = 1 + allowance
    busy = max(b.busy, c.busy)
    busy_limit = limit + BUSY_RESIDUAL * busy
    ci = f"{options.confidence:.0%} CI {low - 1:+.1%}..{high - 1:+.1%}"
    machine_note = f"; machine {machine - 1:+.1%} vs baseline" if machine is not None else ""
    if busy:
        machine_note += f"; other processes used {busy:.0%} of the CPU"
    if ratio <= limit:
        verdict = "pass"
        message = f"{ratio - 1:+.1%} ({basis}, {ci}{machine_note}) within the limit {limit - 1:+.1%}"
    elif low <= 1:
        verdict = "warn"
        message = (f"slower by {ratio - 1:+.1%}, over the limit {limit - 1:+.1%} but within the runs' noise "
                   f"({basis}, {ci}{machine_note})")
    elif ratio <= busy_limit:
        verdict = "warn"
        message = (f"slower by {ratio - 1:+.1%}, over the limit {limit - 1:+.1%} but within what a busy machine "
                   f"adds ({busy_limit - 1:+.1%}; {basis}, {ci}{machine_note}): rerun on a quieter machine")
    else:
        verdict = "fail"
        message = f"slower by {ratio - 1:+.1%} ({basis}, {ci}{machine_note}) > limit {busy_limit - 1:+.1%}"
    if verdict == "fail" and machine is not None and abs(math.log(machine)) > math.log1p(MACHINE_DRIFT_LIMIT):
        verdict = "warn"
        message += (f"; but the machine itself ran {machine - 1:+.1%} vs the baseline, more than the probe can "
                    "correct for: rerun on a quieter machine")
    return LatencyComparison(ratio, low, high, machine, limit, verdict, message, busy, busy_limit)


@dataclass(frozen=True)
class _Series:
    samples: np.ndarray
    probe: np.ndarray | None
    busy: float = 0.0  # share of the CPU other processes used (0 when not recorded)


def _series(block: dict) -> _Series:
    samples = block.get("samples")
    if not samples:  # an older report without samples: the median alone, no spread
        return _Series(np.asarray([block["p50"]], dtype=float), None)
    s = np.asarray(samples, dtype=float)
    probe = block.get("probe_samples")
    p = np.asarray(probe, dtype=float) if probe and len(probe) == len(s) and min(probe) > 0 else None
    return _Series(s, p, float(block.get("machine_busy") or 0.0))


def _bootstrap_ratio(b: np.ndarray, c: np.ndarray, options: GateOptions) -> tuple[float, float]:
    """Percentile bootstrap of median(c) / median(b), resampling each run independently."""
    if len(b) < 5 or len(c) < 5:
        r = float(np.median(c) / np.median(b))
        return r, r
    rng = np.random.default_rng(options.seed)
    mb = np.median(b[rng.integers(0, len(b), (options.resamples, len(b)))], axis=1)
    mc = np.median(c[rng.integers(0, len(c), (options.resamples, len(c)))], axis=1)
    tail = (1 - options.confidence) / 2 * 100
    low, high = np.percentile(mc / mb, [tail, 100 - tail])
    return float(low), float(high)
