"""The search's outcome: the kept artifact in the output folder, with every step in its provenance."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from edgekit.core.artifact import Artifact
from edgekit.core.atomic import atomic_path
from edgekit.core.console import warn
from edgekit.stages.search.options import SearchResult


def adopt(artifact: Artifact, out_dir: Path) -> Artifact:
    """Move a search step's files into the output folder, where the default int8 was written."""
    for f in artifact.files():
        with atomic_path(out_dir / f.name) as tmp:
            shutil.copyfile(f, tmp)
    return replace(artifact, path=out_dir / artifact.path.name)


def finish(artifact: Artifact, steps: list[dict], searched: bool, met: bool, message: str,
           chosen: int = 0, ended_by: str = "steps") -> SearchResult:
    """Record the steps (without their in-memory `_` keys) in the artifact's sidecar. `ended_by`: steps
    (the sequence ran to a step that met the budget, or to its end) or time limit (the safety net)."""
    public = [{k: v for k, v in s.items() if not k.startswith("_")} for s in steps]
    artifact.provenance["accuracy_search"] = {
        "searched": searched, "met": met, "message": message, "chosen_step": chosen, "ended_by": ended_by,
        "float_layers": public[chosen]["float_layers"], "steps": public,
    }
    artifact.save_sidecar()
    if searched and not met:
        warn(message)
    return SearchResult(artifact, met, searched, public, message, steps[chosen].get("_accuracy"))
