"""`recon mesh`: a fit's (or a volume's) iso-surface for CAD viewers, a preview, a CAD comparison."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recon.analysis.mesh import MIN_PART, MeshSummary, extract_mesh
from recon.analysis.mesh_compare import ALIGN_MODES, MeshComparison, compare_meshes
from recon.errors import ConfigError
from recon.io.meshio import read_mesh, write_mesh
from recon.io.volume import read_volume
from recon.reporting.mesh_figures import render_preview, write_comparison

__all__ = ["MeshOutcome", "density_path", "mesh"]


@dataclass(frozen=True)
class MeshOutcome:
    """What :func:`mesh` did: the surface's summary, the comparison with a CAD mesh, the files."""

    summary: MeshSummary
    comparison: MeshComparison | None
    written: tuple[Path, ...]


def density_path(source: Path) -> Path:
    """A fit output directory means its density.tif; a file is taken as it is."""
    if source.is_dir():
        path = source / "density.tif"
        if not path.is_file():
            raise ConfigError(f"{source} holds no density.tif; pass a fit output directory or a volume TIFF")
        return path
    if not source.exists():
        raise ConfigError(f"{source} does not exist; pass a fit output directory or a volume TIFF")
    return source


def mesh(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    level: float | str = "auto",
    fmt: str | None = None,
    smooth: str = "none",
    decimate: float | None = None,
    largest: bool = False,
    min_part: float = MIN_PART,
    compare: str | os.PathLike | None = None,
    align: str = "none",
    overwrite: bool = False,
) -> MeshOutcome:
    """Extract the iso-surface of ``source`` in millimetres and write it to ``out`` (+ a PNG preview).

    Args:
        source: a fit output directory (its density.tif) or a volume TIFF.
        out: the mesh file (.stl, .ply, .obj, .vtp); the preview goes beside it as .png.
        level: ``auto`` (Otsu), a value, or ``fraction:F`` of the maximum.
        fmt: the file format (default: from the suffix).
        smooth: ``none`` or ``taubin``.
        decimate: fraction of triangles to remove, in (0, 1).
        largest: keep only the largest component.
        min_part: specks holding less than this fraction of the mass above the level, and cavities
            of less than this fraction of its volume, are removed first (0: none).
        compare: a CAD mesh to compare with (``OUT_compare.json`` and ``OUT_compare.png``).
        align: ``none`` or ``icp`` (rigid) before comparing.
        overwrite: replace an existing ``out``.
    """
    out = Path(out)
    if align not in ALIGN_MODES:
        raise ConfigError(f"mesh: --align must be one of {', '.join(ALIGN_MODES)}, got {align!r}")
    if align != "none" and compare is None:
        raise ConfigError(f"mesh: --align {align} aligns the mesh to a CAD mesh; add --compare CAD.stl")
    if out.exists() and not overwrite:
        raise ConfigError(f"mesh: {out} exists; pass --overwrite to replace it")
    if compare is not None and not Path(compare).is_file():
        raise ConfigError(f"mesh: CAD mesh {compare} does not exist; pass an existing .stl/.ply/.obj/.vtp")
    volume = read_volume(density_path(Path(source)))
    cad = read_mesh(compare) if compare is not None else None  # before anything is written
    surface, summary = extract_mesh(volume, level=level, smooth=smooth, decimate=decimate, largest=largest,
                                    min_part=min_part)
    write_mesh(surface, out, format=fmt)
    preview = out.with_suffix(".png")
    render_preview(surface, preview, title=out.name)
    written = [out, preview]
    result = None
    if cad is not None:
        result = compare_meshes(surface, cad, align=align)
        stem = out.with_suffix("")
        written += [Path(f"{stem}_compare.json"), Path(f"{stem}_compare.png")]
        write_comparison(result, written[-2], written[-1],
                         extra={"cad": str(compare), "mesh": summary.to_dict()})
    return MeshOutcome(summary, result, tuple(written))
