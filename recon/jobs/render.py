"""`recon render`: pictures of a density volume (projections, a turntable) and of a fit's views."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recon.analysis.turntable import MODES, turntable
from recon.errors import ConfigError
from recon.io.viewimages import load_view_images
from recon.io.volume import read_volume
from recon.jobs.mesh import density_path
from recon.reporting.renders import write_mip, write_turntable, write_view_figures

__all__ = ["RenderOutcome", "render"]


@dataclass(frozen=True)
class RenderOutcome:
    """What :func:`render` wrote: the projections, the turntable's frames and its animation, the views."""

    mip: Path
    frames: tuple[Path, ...]
    animation: Path | None
    views: tuple[Path, ...] = ()


def render(source: str | os.PathLike, out: str | os.PathLike | None = None, *, frames: int = 24,
           axis: str = "z", mode: str = "mip", views: bool | Sequence[str] = False,
           overwrite: bool = False) -> RenderOutcome:
    """Render ``source`` (a fit output directory's density.tif, or a volume TIFF).

    Writes ``mip.png`` (maximum-intensity projections along z, y, x, in mm) and, for ``frames``
    > 0, ``turntable/frame_NNN.png`` and ``turntable.gif`` (views at equal angles about ``axis``,
    maximum intensity or, with ``mode="emission"``, the column density:
    :func:`recon.analysis.turntable.turntable`) into ``out``: by default the fit directory's
    ``renders/``, or ``<volume>-renders/`` beside a TIFF. With ``views`` (True: every view; or
    view names), also a full-size ``view_<name>.png`` of those of a fit's views (measured |
    predicted | residual, from the fit's views.npz:
    :func:`recon.reporting.renders.write_view_figures`).

    Raises:
        ConfigError: no such fit or volume; ``frames`` out of 0 … 720; an unknown axis or mode;
            ``views`` for a volume TIFF, or a view name the fit does not have; a turntable or a
            view's picture (or, with neither asked for, a mip.png) is there already and
            ``overwrite`` is False (nothing is written then).
        DataError: the TIFF is not a volume; the fit's views.npz is missing or damaged.
    """
    source = Path(source)
    path = density_path(source)
    if not 0 <= frames <= 720:
        raise ConfigError(f"render: --frames must be in 0 … 720, got {frames}")
    if axis not in ("x", "y", "z"):
        raise ConfigError(f"render: --axis must be x, y or z, got {axis!r}")
    if mode not in MODES:
        raise ConfigError(f"render: --mode must be one of {', '.join(MODES)}, got {mode!r}")
    if views and not source.is_dir():
        raise ConfigError(f"render: --views draws a fit's views; {source} is a volume TIFF, not a fit")
    where = Path(out) if out is not None else (source / "renders" if source.is_dir()
                                               else path.with_name(f"{path.stem}-renders"))
    images, read_noise_e = load_view_images(source / "views.npz") if views else ([], 0.0)
    if views and views is not True:  # the views named
        names = [v.name for v in images]
        unknown = [n for n in views if n not in names]
        if unknown:
            raise ConfigError(f"render: the fit has no view {unknown[0]!r}; its views are {', '.join(names)}")
        images = [v for v in images if v.name in views]
    # a fit's renders/ already holds its mip.png (the same picture): only what is asked for besides is guarded
    targets = ([where / "turntable.gif"] if frames else []) + [where / f"view_{v.name}.png" for v in images]
    if not overwrite and any(t.exists() for t in targets or [where / "mip.png"]):
        raise ConfigError(f"render: {where} already holds renders; pass --overwrite or choose another --out")
    volume = read_volume(path)
    where.mkdir(parents=True, exist_ok=True)
    mip = write_mip(volume, where / "mip.png")
    drawn = tuple(write_view_figures(where, images, read_noise_e)) if views else ()
    if not frames:
        return RenderOutcome(mip, (), None, drawn)
    shown = turntable(volume, frames, axis, mode=mode)
    pngs, gif = write_turntable(shown, volume.unit, where / "turntable", axis, mode)
    return RenderOutcome(mip, tuple(pngs), gif, drawn)
