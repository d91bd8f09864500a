"""Out-of-memory handling of the fit loop: a step that runs out of memory is retried with half the batch.

On CUDA an allocation that fails raises ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError``)
and leaves the device usable: the fit frees the cache, halves the number of pixels per step,
warns once per halving and goes on. The CPU allocator's failure (a ``RuntimeError`` whose message
says it cannot allocate) is treated the same way. The smaller batch is kept for the rest of the
fit (and in the checkpoint), so a resumed fit does not run out of memory again at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recon.errors import FitError, ReconError

__all__ = ["free_cached_memory", "is_out_of_memory", "smaller_batch"]


_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate",
             "not enough memory")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure of torch (CUDA or CPU)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(err, oom_type):
        return True
    if isinstance(err, ReconError):  # our own errors (smaller_batch's "out of memory even at 1 pixel")
        return False
    return isinstance(err, RuntimeError) and any(t in str(err).lower() for t in _OOM_TEXT)


def smaller_batch(
    err: BaseException,
    batch_pixels: int,
    *,
    device: torch.device | str = "cpu",
    warn: Callable[[str], None] | None = None,
    min_pixels: int = 1,
) -> int:
    """The batch to retry with after ``err``, or ``err`` itself re-raised when it is not an OOM.

    Args:
        err: the exception a step raised.
        batch_pixels: pixels per step that ran out of memory.
        device: where the fit runs (named in the messages).
        warn: called with a one-line warning.
        min_pixels: the smallest batch worth trying.

    Returns:
        ``batch_pixels // 2`` (at least ``min_pixels``).

    Raises:
        FitError: out of memory already at ``min_pixels`` pixels per step.
        BaseException: ``err`` when it is not an out-of-memory error.
    """
    if not is_out_of_memory(err):
        raise err
    device = torch.device(device)
    if batch_pixels <= min_pixels:
        raise FitError(
            f"fit: out of memory on {device} even with {batch_pixels} pixel(s) per step; raise step_mm or "
            "lower pool_samples (--config), or use a device with more memory"
        ) from None
    new = max(min_pixels, batch_pixels // 2)
    if warn is not None:
        warn(f"warning: out of memory on {device} with {batch_pixels} pixels per step; "
             f"continuing with {new}")
    return new


def free_cached_memory(device: torch.device | str) -> None:
    """Return the CUDA caching allocator's free blocks (after a failed step's tensors are gone)."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
