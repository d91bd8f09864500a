"""Mesh files for CAD viewers: binary STL, PLY, OBJ or VTP, written atomically, in millimetres.

STL, PLY and OBJ carry no units; CAD viewers read them as millimetres. pyvista/VTK is imported
inside the functions.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from optics.atomic import atomic_path
from recon.errors import MeshError

if TYPE_CHECKING:
    import pyvista as pv

__all__ = ["MESH_FORMATS", "atomic_suffixed", "read_mesh", "write_mesh"]


MESH_FORMATS = ("stl", "ply", "obj", "vtp")


@contextlib.contextmanager
def atomic_suffixed(path: str | os.PathLike, suffix: str) -> Iterator[Path]:
    """Like :func:`optics.atomic.atomic_path`, but the temporary name ends in ``suffix``.

    VTK/pyvista pick the writer from the file extension, so the temporary file must keep it.
    The writer creates the file itself, so it gets the usual permissions (umask), not 0600.
    """
    with atomic_path(path, suffix=f".tmp{suffix}") as tmp_path:
        tmp_path.unlink()  # the writer creates it
        yield tmp_path


def write_mesh(mesh: pv.PolyData, path: str | os.PathLike, format: str | None = None) -> Path:
    """Write a mesh in millimetres, atomically.

    Args:
        mesh: surface, world frame, mm.
        path: output file.
        format: ``"stl"`` (binary, 84 + 50·triangles bytes), ``"ply"`` (binary), ``"obj"`` or
            ``"vtp"`` (VTK XML, keeps point data such as distances); ``None`` = from the suffix.

    Returns:
        The path written.

    Raises:
        MeshError: the format is unknown or the mesh has no triangles.
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in MESH_FORMATS:
        raise MeshError(
            f"write_mesh: format {fmt!r} (from {'--format' if format else path.name}) is not "
            f"known; use one of {', '.join(MESH_FORMATS)}"
        )
    if mesh.n_cells == 0:
        raise MeshError(f"write_mesh: the mesh for {path} has no triangles")
    if not mesh.is_all_triangles:
        mesh = mesh.triangulate()
    with atomic_suffixed(path, "." + fmt) as tmp:
        if fmt == "stl":
            from vtkmodules.vtkIOGeometry import vtkSTLWriter

            writer = vtkSTLWriter()
            writer.SetFileName(str(tmp))
            writer.SetInputData(mesh)
            writer.SetFileTypeToBinary()
            writer.SetHeader("recon mesh; units: mm; world frame")
            if not writer.Write():
                raise MeshError(f"write_mesh: VTK could not write {path}")
        else:
            mesh.save(str(tmp), binary=True)
    return path


def read_mesh(path: str | os.PathLike, *, what: str = "CAD mesh") -> pv.PolyData:
    """Read a mesh file (any format VTK reads: .stl, .ply, .obj, .vtp, …).

    Raises:
        MeshError: the file is missing, unreadable, or holds no surface (one line, naming it).
    """
    import pyvista as pv

    path = Path(path)
    if not path.is_file():
        raise MeshError(f"mesh: {what} {path} does not exist; pass an existing .stl/.ply/.obj/.vtp")
    try:
        with warnings.catch_warnings():  # VTK reader failures come as multi-line warnings
            warnings.simplefilter("ignore")
            mesh = pv.read(str(path))
    except Exception as err:  # VTK readers raise assorted errors
        raise MeshError(f"mesh: cannot read {what} {path} ({err})") from None
    if mesh is None or mesh.n_points == 0:
        raise MeshError(f"mesh: {what} {path} holds no surface; pass a non-empty mesh file")
    return mesh
