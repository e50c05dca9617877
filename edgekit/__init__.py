"""edgekit: take trained models to edge devices, measured honestly."""

__version__ = "0.1.0"
