"""Atomic file output (implemented in :mod:`optics.atomic`)."""

from optics.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    check_writable,
    output_error,
    remove_stale_temporaries,
)

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
    "output_error",
    "remove_stale_temporaries",
]
