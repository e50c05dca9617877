"""edgekit: take trained models to edge devices, measured honestly.

The Python API mirrors the command line one to one (edgekit.api): `edgekit.quantize(...)` is
`edgekit quantize ...`. Importing edgekit needs no optional runtime.
"""

from edgekit.api import (
    bench,
    check,
    compile,
    deploy,
    emulate,
    emulate_status,
    emulate_stop,
    export,
    prune,
    quantize,
    sweep,
    validate,
)
from edgekit.core.errors import (
    BackendError,
    CheckFailedError,
    EdgekitError,
    InvalidInputError,
    TargetUnavailableError,
)
from edgekit.core.version import __version__

__all__ = ["Artifact", "BackendError", "CheckFailedError", "EdgekitError", "InvalidInputError",
           "TargetUnavailableError", "__version__", "bench", "check", "compile", "deploy", "emulate", "emulate_status",
           "emulate_stop", "export",
           "load_profile", "open_data", "prune", "quantize", "sweep", "validate"]


def __getattr__(name: str):
    """Artifact, open_data and load_profile load numpy on first use, so `import edgekit` and
    `edgekit --help` stay fast."""
    if name == "Artifact":
        from edgekit.core.artifact import Artifact

        return Artifact
    if name == "open_data":
        from edgekit.core.data import open_data

        return open_data
    if name == "load_profile":
        from edgekit.backends.registry import load_profile

        return load_profile
    raise AttributeError(f"module 'edgekit' has no attribute '{name}'")
