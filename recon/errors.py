"""The project's typed errors (defined in :mod:`optics.errors`, which depends on nothing)."""

from optics.errors import (
    BackendUnavailableError,
    CalibrationError,
    ConfigError,
    DataError,
    FitError,
    MeshError,
    OutputError,
    ReconError,
    ShapeError,
)

__all__ = [
    "BackendUnavailableError",
    "CalibrationError",
    "ConfigError",
    "DataError",
    "FitError",
    "MeshError",
    "OutputError",
    "ReconError",
    "ShapeError",
]
