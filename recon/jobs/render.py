"""`recon render`: pictures of a fit's (or any) density volume — projections and a turntable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recon.analysis.turntable import turntable
from recon.errors import ConfigError
from recon.io.volume import read_volume
from recon.jobs.mesh import density_path
from recon.reporting.renders import write_mip, write_turntable

__all__ = ["RenderOutcome", "render"]


@dataclass(frozen=True)
class RenderOutcome:
    """What :func:`render` wrote: the projections, the turntable's frames and its animation."""

    mip: Path
    frames: tuple[Path, ...]
    animation: Path | None


def render(source: str | os.PathLike, out: str | os.PathLike | None = None, *, frames: int = 24,
           axis: str = "z", overwrite: bool = False) -> RenderOutcome:
    """Render ``source`` (a fit output directory's density.tif, or a volume TIFF).

    Writes ``mip.png`` (maximum-intensity projections along z, y, x, in mm) and, for ``frames``
    > 0, ``turntable/frame_NNN.png`` and ``turntable.gif`` (maximum-intensity views at equal
    angles about ``axis``, :func:`recon.analysis.turntable.turntable`) into ``out``: by default
    the fit directory's ``renders/``, or ``<volume>-renders/`` beside a TIFF.

    Raises:
        ConfigError: no such fit or volume; ``frames`` out of 0 … 720; an unknown axis; a
            turntable (or, with ``frames`` 0, a mip.png) is there already and ``overwrite`` is
            False (nothing is written then).
        DataError: the TIFF is not a volume.
    """
    source = Path(source)
    path = density_path(source)
    if not 0 <= frames <= 720:
        raise ConfigError(f"render: --frames must be in 0 … 720, got {frames}")
    if axis not in ("x", "y", "z"):
        raise ConfigError(f"render: --axis must be x, y or z, got {axis!r}")
    where = Path(out) if out is not None else (source / "renders" if source.is_dir()
                                               else path.with_name(f"{path.stem}-renders"))
    # a fit's renders/ already holds its mip.png (the same picture): only a turntable is guarded
    target = where / ("turntable.gif" if frames else "mip.png")
    if not overwrite and target.exists():
        raise ConfigError(f"render: {where} already holds renders; pass --overwrite or choose another --out")
    volume = read_volume(path)
    where.mkdir(parents=True, exist_ok=True)
    mip = write_mip(volume, where / "mip.png")
    if not frames:
        return RenderOutcome(mip, (), None)
    pngs, gif = write_turntable(turntable(volume, frames, axis), volume.unit, where / "turntable", axis)
    return RenderOutcome(mip, tuple(pngs), gif)
