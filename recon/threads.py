"""One thread count for torch and the compiled (numba) kernels."""

from __future__ import annotations

import numba
import torch

__all__ = ["numba_threads"]


def numba_threads() -> int:
    """Give numba torch's thread count (as many as it has) and return it.

    numba's OpenMP layer, starting up, resets the OpenMP thread count it shares with torch to all
    cores: torch's own count is put back, so that a job told to use one thread does.
    """
    before = torch.get_num_threads()
    threads = max(1, min(before, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)
    return threads
