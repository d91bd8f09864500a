"""The environment a result was made in, and what this machine can run (``recon doctor``)."""

from __future__ import annotations

import platform
from importlib import metadata

import torch

import recon
from recon.model.hashgrid_tcnn import available_backends

__all__ = ["DEPENDENCIES", "RECORDED", "doctor_lines", "versions"]

#: The packages ``recon doctor`` lists.
DEPENDENCIES = ("torch", "numba", "numpy", "scipy", "tifffile", "typer", "rich", "matplotlib", "pyvista",
                "vtk", "tinycudann")
#: The packages whose versions every output records.
RECORDED = ("torch", "numba", "numpy", "tifffile", "pyvista", "tinycudann")


def versions(packages: tuple[str, ...] = RECORDED) -> dict:
    """Versions of the program, Python and ``packages`` (None for one that is not installed)."""
    out = {"recon": recon.__version__, "python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def doctor_lines() -> list[str]:
    """What ``recon doctor`` prints: versions, CPU threads, CUDA devices, field backends and why not."""
    v = versions(DEPENDENCIES)
    lines = [f"recon {v.pop('recon')}, Python {v.pop('python')} on {platform.platform()}"]
    lines += [f"  {pkg:<11} {version or 'not installed'}" for pkg, version in v.items()]
    lines.append(f"CPU threads: {torch.get_num_threads()}")
    if torch.cuda.is_available():
        lines += [f"CUDA device {i}: {torch.cuda.get_device_name(i)}"
                  for i in range(torch.cuda.device_count())]
    else:
        lines.append(f"CUDA: not available (torch CUDA build: {'yes' if torch.version.cuda else 'no'})")
    backends = available_backends()
    usable = [name for name, (ok, _) in backends.items() if ok]
    lines.append("hash-grid backends: " + ", ".join(f"{n} (always)" if n == "torch" else n for n in usable))
    ok, reason = backends["tcnn"]
    lines.append(f"tiny-cuda-nn: {'available' if ok else 'unavailable — ' + reason}")
    return lines
