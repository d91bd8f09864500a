"""Pictures of meshes: an off-screen preview, and the comparison of a reconstruction with a CAD mesh."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from optics.atomic import atomic_write_text
from recon.analysis.mesh_compare import MeshComparison
from recon.errors import BackendUnavailableError, MeshError
from recon.io.meshio import atomic_suffixed

if TYPE_CHECKING:
    import pyvista as pv

__all__ = ["render_preview", "write_comparison"]


def render_preview(
    mesh: pv.PolyData,
    path_png: str | os.PathLike,
    *,
    scalars: str | np.ndarray | None = None,
    title: str | None = None,
    clim: tuple[float, float] | None = None,
    window_size: tuple[int, int] = (1024, 768),
) -> Path:
    """Render a mesh off-screen to a PNG (oblique view from +z, axes in mm), atomically.

    Args:
        mesh: surface, world frame, mm.
        path_png: output image.
        scalars: name of a point/cell array of ``mesh``, or an (n_points,) or (n_cells,)
            array, to colour by; a scalar bar is drawn when given.
        title: scalar-bar title (default: the array name), e.g. ``"distance to CAD (µm)"``.
        clim: colour range; default the data range.
        window_size: image size in pixels ``(width, height)``.

    Raises:
        BackendUnavailableError: VTK cannot render off-screen here (no EGL/OSMesa/X).
    """
    import pyvista as pv

    path_png = Path(path_png)
    mesh = mesh.copy(deep=False)
    bar_title = title
    if scalars is not None and not isinstance(scalars, str):
        values = np.asarray(scalars)
        if len(values) == mesh.n_points:
            mesh.point_data["scalars"] = values
        elif len(values) == mesh.n_cells:
            mesh.cell_data["scalars"] = values
        else:
            raise MeshError(
                f"render_preview: scalars has {len(values)} values; the mesh has "
                f"{mesh.n_points} points and {mesh.n_cells} cells"
            )
        scalars = "scalars"
    if scalars is not None and bar_title is None:
        bar_title = scalars
    with atomic_suffixed(path_png, ".png") as tmp, _quiet_vtk_warnings():
        try:
            plotter = pv.Plotter(off_screen=True, window_size=list(window_size))
            try:
                plotter.set_background("white")
                kwargs = {"smooth_shading": True, "split_sharp_edges": True, "color": "#c8d0e0"}
                if scalars is not None:
                    kwargs = {
                        "smooth_shading": True,
                        "split_sharp_edges": True,
                        "scalars": scalars,
                        "cmap": "viridis",
                        "clim": clim,
                        "show_scalar_bar": True,
                        "scalar_bar_args": {"title": bar_title, "color": "black", "fmt": "%.3g"},
                    }
                plotter.add_mesh(mesh, **kwargs)
                plotter.show_bounds(
                    xtitle="x (mm)", ytitle="y (mm)", ztitle="z (mm)", color="black",
                    font_size=10,
                )
                # From +z, tilted towards −y, y up: text in the x–y plane reads left to right.
                centre = np.asarray(mesh.center, dtype=np.float64)
                distance = 2.5 * float(mesh.length) + 1e-9
                direction = np.array([0.35, -0.75, 1.0]) / np.linalg.norm([0.35, -0.75, 1.0])
                plotter.camera_position = [
                    tuple(centre + distance * direction), tuple(centre), (0.0, 1.0, 0.0)
                ]
                plotter.enable_parallel_projection()
                plotter.reset_camera()
                plotter.screenshot(str(tmp))
            finally:
                plotter.close()
        except (RuntimeError, OSError) as err:
            raise BackendUnavailableError(
                f"render_preview: off-screen rendering failed ({err}); use a VTK build with "
                "EGL or OSMesa, or skip the preview"
            ) from err
    return path_png


@contextlib.contextmanager
def _quiet_vtk_warnings() -> Iterator[None]:
    """Silence VTK's stderr warnings (e.g. "bad X server connection" when headless)."""
    from vtkmodules.vtkCommonCore import vtkLogger

    previous = vtkLogger.GetCurrentVerbosityCutoff()
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_ERROR)
    try:
        yield
    finally:
        vtkLogger.SetStderrVerbosity(vtkLogger.ConvertToVerbosity(previous))


def write_comparison(
    comparison: MeshComparison,
    path_json: str | os.PathLike,
    path_png: str | os.PathLike | None = None,
    *,
    extra: dict | None = None,
) -> None:
    """Write a comparison as JSON (numbers) and optionally a PNG of the distances, atomically.

    Args:
        comparison: from :func:`compare_meshes`.
        path_json: output JSON (distances µm, transform mm).
        path_png: output PNG of the aligned reconstruction coloured by its distance to the CAD
            surface (µm), or None.
        extra: more JSON-serialisable entries (e.g. input paths, the mesh summary).
    """
    payload = comparison.to_dict()
    if extra:
        payload.update(extra)
    atomic_write_text(path_json, json.dumps(payload, indent=2) + "\n")
    if path_png is not None:
        render_preview(comparison.aligned_mesh, path_png, scalars="distance_um",
                       title="distance to CAD (µm)")
