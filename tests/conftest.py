"""Shared test markers and tolerances."""

import pytest
import torch


def _tcnn_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import tinycudann  # noqa: F401
    except (ImportError, OSError) as err:  # tcnn raises EnvironmentError
        return f"tinycudann not importable: {err}"
    return None


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
_TCNN_REASON = _tcnn_reason()
requires_tcnn = pytest.mark.skipif(_TCNN_REASON is not None, reason=f"needs tinycudann: {_TCNN_REASON}")
slow = pytest.mark.slow

# Tolerances keyed by dtype: (rtol, atol).
TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-10, 1e-12)}
