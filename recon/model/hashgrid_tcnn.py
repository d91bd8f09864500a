"""The tiny-cuda-nn hash grid (CUDA only, optional, imported lazily), and what this machine can use."""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from recon.errors import BackendUnavailableError, ShapeError
from recon.model.hashgrid import HashGridConfig, hashgrid_levels, init_hashgrid_params

__all__ = ["TCNN_INSTALL_HINT", "TcnnHashGrid", "available_backends", "tcnn_status"]


TCNN_INSTALL_HINT = (
    "pass --backend torch (same results, slower), or install tiny-cuda-nn from source on a "
    "CUDA machine: pip install "
    "git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch"
)


def tcnn_status() -> tuple[bool, str]:
    """Whether tiny-cuda-nn can be used here, and why (never raises).

    Returns:
        ``(available, reason)``; ``reason`` is the exact cause when unavailable (no CUDA device,
        not installed, or the import's error text — tinycudann raises ``EnvironmentError``,
        not only ``ImportError``, when it finds no usable GPU), else the version and device.
    """
    installed = importlib.util.find_spec("tinycudann") is not None
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        note = "tinycudann is installed" if installed else "tinycudann is not installed"
        return False, (f"no CUDA device (torch {torch.__version__}, {build}; "
                       f"torch.cuda.is_available() is False); {note}")
    if not installed:
        return False, "tinycudann is not installed (ImportError: No module named 'tinycudann')"
    try:
        import tinycudann  # noqa: F401
    except ImportError as err:
        return False, f"tinycudann failed to import (ImportError: {err})"
    except Exception as err:  # EnvironmentError (= OSError) without a usable GPU, and others
        return False, f"tinycudann failed to load ({type(err).__name__}: {err})"
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("tinycudann")
    except PackageNotFoundError:
        ver = "unknown version"
    return True, f"tinycudann {ver} on {torch.cuda.get_device_name()}"


def available_backends() -> dict[str, tuple[bool, str]]:
    """Every concrete backend with ``(available, reason)``, for ``recon doctor``."""
    cuda = torch.cuda.is_available()
    torch_reason = f"pure PyTorch {torch.__version__}, " + ("cpu and cuda" if cuda else "cpu")
    return {"torch": (True, torch_reason), "tcnn": tcnn_status()}


def _import_tcnn():
    """Import tinycudann or raise BackendUnavailableError with the reason and the remedy."""
    ok, reason = tcnn_status()
    if not ok:
        raise BackendUnavailableError(
            f"make_encoding: backend 'tcnn' is unavailable: {reason}; {TCNN_INSTALL_HINT}"
        )
    import tinycudann

    return tinycudann


class TcnnHashGrid(nn.Module):
    """tiny-cuda-nn's ``HashGrid`` with the torch twin's interface and parameter name.

    The flat fp32 master parameters live in ``params`` (same length and layout as
    :class:`TorchHashGrid`); the wrapped ``tinycudann.Encoding`` is not a registered submodule
    and reads ``params`` (cast to its precision) on every call, so the ``state_dict`` is
    ``{"params": ...}`` for both backends. Output is float32.

    Raises:
        BackendUnavailableError: tinycudann or CUDA is missing (reason and remedy in the text).
    """

    backend = "tcnn"

    def __init__(self, cfg: HashGridConfig, *, n_input_dims: int = 3, seed: int = 0,
                 dtype: torch.dtype = torch.float16, device: torch.device | str | None = "cuda") -> None:
        super().__init__()
        tcnn = _import_tcnn()
        device = torch.device(device if device is not None else "cuda")
        if device.type != "cuda":
            raise BackendUnavailableError(
                f"TcnnHashGrid: tiny-cuda-nn runs on CUDA only, got device {device}; "
                "pass --backend torch for the CPU"
            )
        self.cfg = cfg
        self.n_input_dims = n_input_dims
        self.levels = hashgrid_levels(cfg, n_input_dims)
        n_params = (self.levels[-1].offset + self.levels[-1].table_size) * cfg.n_features_per_level
        with torch.cuda.device(device):
            encoding = tcnn.Encoding(n_input_dims, cfg.to_tcnn(), seed=seed, dtype=dtype)
        if encoding.params.numel() != n_params or encoding.n_output_dims != cfg.n_output_dims:
            raise BackendUnavailableError(
                f"TcnnHashGrid: this tinycudann has {encoding.params.numel()} parameters and "
                f"{encoding.n_output_dims} outputs, the layout expects {n_params} and "
                f"{cfg.n_output_dims}; its grid layout differs, use --backend torch"
            )
        self.n_output_dims = cfg.n_output_dims
        self.params = nn.Parameter(
            init_hashgrid_params(n_params, seed=seed, dtype=torch.float32).to(device)
        )
        object.__setattr__(self, "_encoding", encoding)  # hidden: its only parameter is ours
        encoding.params = self.params

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return self.params.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode (N, d) CUDA positions in [0, 1]^d -> (N, n_levels * F) float32 features."""
        if x.ndim != 2 or x.shape[1] != self.n_input_dims:
            raise ShapeError(
                f"TcnnHashGrid.forward: x must have shape (N, {self.n_input_dims}), "
                f"got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            return x.new_zeros(0, self.n_output_dims, dtype=torch.float32)
        encoding = self._encoding
        if encoding.params is not self.params:  # re-link after .to() replaced the Parameter
            encoding.params = self.params
        return encoding(x.float().clamp(0.0, 1.0).contiguous()).float()

    def extra_repr(self) -> str:
        """Configuration, for ``print(module)``."""
        return f"n_input_dims={self.n_input_dims}, {self.cfg}, n_params={self.n_params}"
