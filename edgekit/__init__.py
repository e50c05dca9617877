"""edgekit: take trained models to edge devices, measured honestly."""

from edgekit.core.version import __version__

__all__ = ["__version__"]
