"""Per-output metrics for any model (OCR, audio, regression, stateful, ...): each output on its own.

Cosine per sample (mean, min), SQNR over the whole set, max absolute and relative L2 error, so a
broken second output can never hide behind a good first one. There is never a made-up top-1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgekit.tasks.base import Outputs, Task, check_pairs, cosine, result, rounded, shape_text, task_metric


def output_metrics(reference: Outputs, candidate: Outputs, output_names: Sequence[str]) -> dict[str, dict]:
    """{output name: {shape, cosine_mean, cosine_min, sqnr_db, max_abs_err, rel_err}} (or {shape, error}).

    `sqnr_db` is None when the candidate equals the reference exactly (no noise at all)."""
    return {name: one_output(reference, candidate, i) for i, name in enumerate(output_names)}


def one_output(reference: Outputs, candidate: Outputs, index: int) -> dict:
    cos, noise, signal, max_abs = [], 0.0, 0.0, 0.0
    shape = shape_text(np.shape(reference[0][index]))
    for n, (ref_sample, got_sample) in enumerate(zip(reference, candidate)):
        r = np.asarray(ref_sample[index], np.float64).ravel()
        g = np.asarray(got_sample[index], np.float64).ravel()
        if r.shape != g.shape:
            return {"shape": shape, "error": f"sample {n}: the candidate gives {shape_text(np.shape(got_sample[index]))}, "
                                             f"the FP32 reference {shape_text(np.shape(ref_sample[index]))}"}
        if not np.isfinite(g).all():
            return {"shape": shape, "error": f"sample {n}: the candidate output holds NaN or Inf"}
        cos.append(cosine(r, g))
        diff = r - g
        noise += float(diff @ diff)
        signal += float(r @ r)
        max_abs = max(max_abs, float(np.abs(diff).max(initial=0.0)))
    if noise == 0:
        sqnr, rel = None, 0.0
    else:
        sqnr = 10 * np.log10(signal / noise) if signal > 0 else None
        rel = np.sqrt(noise / signal) if signal > 0 else None
    return {"shape": shape, "cosine_mean": rounded(np.mean(cos)), "cosine_min": rounded(np.min(cos)),
            "sqnr_db": rounded(sqnr, 2), "max_abs_err": rounded(max_abs, 8), "rel_err": rounded(rel)}


class GenericTask(Task):
    """Any model: the task metric is the worst output's mean cosine to FP32 (x100 for the drop)."""

    name = "generic"
    metric_name = "min_output_cosine"

    def evaluate(self, reference: Outputs, candidate: Outputs, output_names: Sequence[str], truth=None) -> dict:
        check_pairs(reference, candidate, output_names)
        outputs = output_metrics(reference, candidate, output_names)
        worst_name, worst = min(((n, m.get("cosine_mean") or 0.0) for n, m in outputs.items()), key=lambda p: p[1])
        metrics = {"worst_output": worst_name, "outputs": outputs}
        return result(self.name, task_metric(self.metric_name, worst, 1.0, worst), metrics)
