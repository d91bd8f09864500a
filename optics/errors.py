"""Typed errors raised at the public boundary of `optics`, `calibration` and `recon`.

Every error a user can cause derives from :class:`ReconError`; the command line prints its
message on one line and exits with status 2. Messages name the function or file, the argument
or key, what was expected, what came, and the fix.
"""

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


class ReconError(Exception):
    """Base class of every error caused by input the user can fix."""


class ShapeError(ReconError, ValueError):
    """An array or tensor has the wrong shape, or two grids do not match."""


class ConfigError(ReconError, ValueError):
    """A system file, run description or fit configuration is invalid."""


class DataError(ReconError, ValueError):
    """Frames, volumes or checkpoints are missing, unreadable or hold invalid values."""


class BackendUnavailableError(ReconError, RuntimeError):
    """An explicitly requested backend or device cannot be used here."""


class CalibrationError(ReconError, RuntimeError):
    """Calibration cannot proceed (no spots, ambiguous spots, too few constraints)."""


class FitError(ReconError, RuntimeError):
    """A fit cannot continue (non-finite loss, empty data)."""


class MeshError(ReconError, ValueError):
    """No mesh can be extracted or compared as asked."""


class OutputError(ReconError, RuntimeError):
    """An output cannot be written: its directory is not writable, the disk is full, or it exists."""
