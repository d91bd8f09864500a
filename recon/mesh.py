"""Surface meshes of densities for CAD viewers, and their comparison with CAD meshes.

Everything here works in the world frame in millimetres (REFERENCE §6): a mesh vertex at
``(x, y, z)`` is the point ``(x, y, z)`` mm of the volume it came from, whose voxel ``(k, j, i)``
has its centre at ``origin_mm + (i, j, k) * voxel_size_mm``. STL, PLY and OBJ carry no units;
CAD viewers read them as millimetres.

* :func:`extract_mesh` — iso-surface of a :class:`~recon.volume.Volume` by marching cubes
  (Lorensen & Cline 1987, doi:10.1145/37402.37422; VTK's flying-edges variant, Schroeder et al.
  2015, doi:10.1109/LDAV.2015.7348069), after padding with background so the surface closes;
  outward normals (from high density to low), optional Taubin smoothing (Taubin 1995,
  doi:10.1145/218380.218473), decimation and keep-largest-component.
* :func:`summarize_mesh` / :class:`MeshSummary` — triangles, area, enclosed volume, watertightness.
* :func:`write_mesh` — binary STL, PLY, OBJ or VTP, atomically.
* :func:`render_preview` — an off-screen PNG of a mesh, optionally coloured by a scalar.
* :func:`compare_meshes` / :func:`write_comparison` — symmetric surface distances (µm) between a
  reconstruction and a CAD mesh, optionally after rigid ICP (Besl & McKay 1992,
  doi:10.1109/34.121791).
* :func:`voxelize_mesh` — the inside of a closed mesh as an opaque-object density (0/1, with an
  anti-aliased edge by supersampling), for simulations.
* :func:`make_doe_mesh` — the reference CAD test object, the word "DOE" (``data/meshes/doe.stl``).

pyvista/VTK is imported inside the functions, so ``import recon.mesh`` stays light.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recon.errors import BackendUnavailableError, MeshError
from recon.volume import Volume

if TYPE_CHECKING:
    import pyvista as pv

__all__ = [
    "DOE_BOX_MM",
    "MESH_FORMATS",
    "DistanceStats",
    "MeshComparison",
    "MeshSummary",
    "compare_meshes",
    "extract_mesh",
    "make_doe_mesh",
    "otsu_level",
    "point_to_surface_distance",
    "render_preview",
    "resolve_level",
    "sample_surface",
    "summarize_mesh",
    "voxelize_mesh",
    "write_comparison",
    "write_mesh",
]

MESH_FORMATS = ("stl", "ply", "obj", "vtp")
SMOOTH_MODES = ("none", "taubin")
ALIGN_MODES = ("none", "icp")

#: Half-extents ``(x, y, z)`` mm of the box centred on the origin that holds the default
#: :func:`make_doe_mesh` (the word is 2.30 × 1.60 × 0.40 mm; the box is 2.4 × 1.6 × 0.4 mm).
DOE_BOX_MM = (1.2, 0.8, 0.2)

_COMPARISON_FORMAT = "recon.mesh_comparison/1"


# ----------------------------------------------------------------------------------------------
# Levels


def otsu_level(values: np.ndarray, *, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the level that maximises the between-class variance.

    Otsu 1979, doi:10.1109/TSMC.1979.4310076. Computed on a ``bins``-bin histogram between
    the minimum and maximum; the threshold is the upper edge of the last bin of the low class
    (the middle of the range of such edges when several tie, e.g. across an empty gap).
    For an opaque object (background 0, object 1, a thin blurred edge) it lands near 0.5; for a
    cloud it separates the cloud from the background noise.

    Args:
        values: any-shape array of densities.
        bins: histogram bins.

    Raises:
        MeshError: ``values`` is constant, so there are no two classes.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        raise MeshError(f"mesh: the density is constant ({_fmt(lo, lo, hi)}); no surface to extract")
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)[:-1].astype(np.float64)  # low class = bins 0..t
    s0 = np.cumsum(hist * centres)[:-1]
    w1 = hist.sum() - w0
    s1 = (hist * centres).sum() - s0
    with np.errstate(invalid="ignore", divide="ignore"):
        between = w0 * w1 * (s0 / w0 - s1 / w1) ** 2
    between = np.where((w0 > 0) & (w1 > 0), between, -1.0)
    # Across an empty gap between the classes the criterion is flat: take the plateau's middle
    # (a clean 0/1 volume gives 0.5, not the first empty bin).
    first = int(np.argmax(between))
    flat = between >= between[first] * (1.0 - 1e-9)
    last = first
    while last + 1 < len(between) and flat[last + 1]:
        last += 1
    return float(0.5 * (edges[first + 1] + edges[last + 1]))


def resolve_level(data: np.ndarray, level: float | str = "auto") -> tuple[float, str]:
    """Turn a level request into an absolute iso-level and a description of the rule.

    Args:
        data: (Z, Y, X) densities.
        level: ``"auto"`` (Otsu threshold of the voxel values, :func:`otsu_level`), an absolute
            density (a number, or a string holding one), or ``"fraction:F"`` = ``F × max``.

    Returns:
        ``(level, rule)``: the absolute level and a short text such as ``"auto (Otsu)"``.

    Raises:
        MeshError: the request cannot be parsed, or the level lies outside the density range.
    """
    lo, hi = float(np.min(data)), float(np.max(data))
    if isinstance(level, str):
        text = level.strip().lower()
        if text == "auto":
            value, rule = otsu_level(data), "auto (Otsu threshold of the voxel values)"
        elif text.startswith("fraction:"):
            try:
                frac = float(text.split(":", 1)[1])
            except ValueError:
                frac = math.nan
            if not 0.0 < frac < 1.0:
                raise MeshError(
                    f"mesh: level {level!r} needs a fraction between 0 and 1, e.g. 'fraction:0.5'"
                )
            value, rule = frac * hi, f"fraction {frac:g} of the maximum {_fmt(hi, lo, hi)}"
        else:
            try:
                value = float(text)
            except ValueError:
                raise MeshError(
                    f"mesh: level {level!r} is not understood; give a number, 'auto' "
                    "or 'fraction:F' (e.g. 'fraction:0.5')"
                ) from None
            rule = "absolute"
    else:
        value, rule = float(level), "absolute"
    if not math.isfinite(value):
        raise MeshError(f"mesh: level {level!r} is not finite")
    if not lo < value < hi:
        if value >= hi:
            hint = f"pass --level below {_fmt(_round_toward(hi, down=True, lo=lo, hi=hi), lo, hi)}"
        else:
            hint = f"pass --level above {_fmt(_round_toward(lo, down=False, lo=lo, hi=hi), lo, hi)}"
        raise MeshError(
            f"mesh: no surface at level {value:g} (density range {_fmt(lo, lo, hi)}–"
            f"{_fmt(hi, lo, hi)}); {hint}"
        )
    return value, rule


def _uses_fixed(lo: float, hi: float) -> bool:
    scale = max(abs(lo), abs(hi))
    return 1e-2 <= scale < 1e5


def _fmt(v: float, lo: float, hi: float) -> str:
    """Format a density for a message: 2 decimals for ordinary ranges, else 3 significant."""
    return f"{v:.2f}" if _uses_fixed(lo, hi) else f"{v:.3g}"


def _round_toward(v: float, *, down: bool, lo: float, hi: float) -> float:
    """Round ``v`` to the printed precision towards the inside of the range (for hints)."""
    if v == 0.0:
        return 0.0
    step = 0.01 if _uses_fixed(lo, hi) else 10.0 ** (math.floor(math.log10(abs(v))) - 2)
    return (math.floor if down else math.ceil)(v / step) * step


# ----------------------------------------------------------------------------------------------
# Summary


@dataclass(frozen=True)
class MeshSummary:
    """What a mesh is, in numbers a CAD user checks first.

    Attributes:
        n_triangles: number of triangles.
        n_vertices: number of vertices.
        n_components: connected pieces of surface.
        area_mm2: surface area, mm².
        volume_mm3: enclosed (signed) volume by the divergence theorem, mm³; positive for
            outward normals; meaningful only when ``watertight``.
        watertight: every edge is shared by exactly two triangles (no holes, no non-manifold
            edges).
        oriented: neighbouring triangles have consistent winding (each edge used once in each
            direction).
        n_boundary_edges: edges used by one triangle only (holes).
        n_nonmanifold_edges: edges used by more than two triangles.
        bounds_mm: ``((x_min, y_min, z_min), (x_max, y_max, z_max))``, world frame, mm.
        level: iso-level the surface was extracted at (density units), or None.
        level_rule: how the level was chosen, e.g. ``"auto (Otsu threshold of the voxel values)"``.
    """

    n_triangles: int
    n_vertices: int
    n_components: int
    area_mm2: float
    volume_mm3: float
    watertight: bool
    oriented: bool
    n_boundary_edges: int
    n_nonmanifold_edges: int
    bounds_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    level: float | None = None
    level_rule: str = ""

    @property
    def size_mm(self) -> tuple[float, float, float]:
        """Edge lengths ``(x, y, z)`` of the bounding box, mm."""
        lo, hi = self.bounds_mm
        return tuple(float(b - a) for a, b in zip(lo, hi, strict=True))

    def to_dict(self) -> dict:
        """JSON-serialisable form (units in the key names)."""
        return {
            "n_triangles": self.n_triangles,
            "n_vertices": self.n_vertices,
            "n_components": self.n_components,
            "area_mm2": self.area_mm2,
            "volume_mm3": self.volume_mm3,
            "watertight": self.watertight,
            "oriented": self.oriented,
            "n_boundary_edges": self.n_boundary_edges,
            "n_nonmanifold_edges": self.n_nonmanifold_edges,
            "bounds_mm": [list(self.bounds_mm[0]), list(self.bounds_mm[1])],
            "size_mm": list(self.size_mm),
            "level": self.level,
            "level_rule": self.level_rule,
        }

    def format(self) -> str:
        """A few aligned lines for the terminal."""
        lo, hi = self.bounds_mm
        plural = "" if self.n_components == 1 else "s"
        lines = [
            f"mesh: {self.n_triangles} triangles, {self.n_vertices} vertices, "
            f"{self.n_components} component{plural}"
        ]
        if self.level is not None:
            lines.append(f"  level        {self.level:.4g} ({self.level_rule})")
        if self.watertight:
            closed = "yes"
        else:
            closed = (
                f"NO ({self.n_boundary_edges} boundary, {self.n_nonmanifold_edges} "
                "non-manifold edges; the volume is not meaningful)"
            )
        lines += [
            f"  area         {self.area_mm2:.4g} mm²",
            f"  volume       {self.volume_mm3:.4g} mm³ (enclosed)",
            f"  watertight   {closed}",
            "  bounds       "
            + ", ".join(f"{a} {lo[n]:.3f} … {hi[n]:.3f}" for n, a in enumerate("xyz"))
            + " mm",
            "  size         " + " × ".join(f"{s:.3f}" for s in self.size_mm) + " mm",
        ]
        if not self.oriented:
            lines.append("  orientation  inconsistent winding: normals flip between triangles")
        return "\n".join(lines)


def summarize_mesh(
    mesh: pv.PolyData, *, level: float | None = None, level_rule: str = ""
) -> MeshSummary:
    """Measure a triangle mesh (any mesh is triangulated first): area, enclosed volume, closure.

    Args:
        mesh: surface, world frame, mm.
        level: iso-level to record, if the mesh came from a density.
        level_rule: how that level was chosen.
    """
    points, faces = _triangles(mesh)
    tri = points[faces]  # (F, 3, 3)
    n_bound, n_nonman, oriented = _edge_topology(faces)
    if len(faces):
        cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        area = 0.5 * float(np.linalg.norm(cross, axis=1).sum())
        bounds = (tuple(map(float, tri.reshape(-1, 3).min(0))),
                  tuple(map(float, tri.reshape(-1, 3).max(0))))
    else:
        area, bounds = 0.0, ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    n_used = len(np.unique(faces)) if len(faces) else 0
    return MeshSummary(
        n_triangles=len(faces),
        n_vertices=n_used,
        n_components=_count_components(faces, len(points)),
        area_mm2=area,
        volume_mm3=_signed_volume(points, faces),
        watertight=len(faces) > 0 and n_bound == 0 and n_nonman == 0,
        oriented=oriented,
        n_boundary_edges=n_bound,
        n_nonmanifold_edges=n_nonman,
        bounds_mm=bounds,
        level=level,
        level_rule=level_rule,
    )


def _triangles(mesh: pv.PolyData) -> tuple[np.ndarray, np.ndarray]:
    """``(points (V, 3) float64, faces (F, 3) int64)`` of a mesh, triangulating if needed."""
    if mesh.n_cells and not mesh.is_all_triangles:
        mesh = mesh.triangulate()
    points = np.asarray(mesh.points, dtype=np.float64)
    if mesh.n_cells == 0:
        return points, np.zeros((0, 3), dtype=np.int64)
    faces = np.asarray(mesh.regular_faces, dtype=np.int64).reshape(-1, 3)
    return points, faces


def _signed_volume(points: np.ndarray, faces: np.ndarray) -> float:
    """Σ (p0 · p1 × p2) / 6 about the centroid (positive for outward normals)."""
    if len(faces) == 0:
        return 0.0
    p = points - points[faces].reshape(-1, 3).mean(0)
    a, b, c = p[faces[:, 0]], p[faces[:, 1]], p[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _edge_topology(faces: np.ndarray) -> tuple[int, int, bool]:
    """``(boundary edges, non-manifold edges, consistently oriented)`` of a triangle list."""
    if len(faces) == 0:
        return 0, 0, True
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])  # (3F, 2)
    n = int(faces.max()) + 1
    undirected = np.sort(directed, axis=1)
    _, counts = np.unique(undirected[:, 0] * n + undirected[:, 1], return_counts=True)
    directed_keys = directed[:, 0] * n + directed[:, 1]
    oriented = len(np.unique(directed_keys)) == len(directed_keys)
    return int((counts == 1).sum()), int((counts > 2).sum()), oriented


def _count_components(faces: np.ndarray, n_points: int) -> int:
    """Connected pieces of surface (vertices joined by triangle edges)."""
    if len(faces) == 0:
        return 0
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix(
        (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])),
        shape=(n_points, n_points),
    )
    _, labels = connected_components(graph, directed=False)
    return len(np.unique(labels[np.unique(faces)]))


# ----------------------------------------------------------------------------------------------
# Extraction


def extract_mesh(
    volume: Volume,
    *,
    level: float | str = "auto",
    smooth: str = "none",
    decimate: float | None = None,
    largest: bool = False,
    smooth_iterations: int = 20,
) -> tuple[pv.PolyData, MeshSummary]:
    """Extract the iso-surface of a density as a closed triangle mesh in world millimetres.

    The volume is padded by one voxel of background (its minimum value) on every side, so an
    object touching the grid edge still gives a closed surface. Marching cubes (VTK flying
    edges) then runs on the voxel centres ``origin_mm + (i, j, k) * voxel_size_mm``. Triangles
    are wound so their normals point out of the region above the level (from high density to
    low); point normals ``"Normals"`` follow the winding.

    Args:
        volume: the density; its ``data`` is ``(Z, Y, X)``.
        level: ``"auto"`` — Otsu threshold of the voxel values (:func:`otsu_level`); a number —
            an absolute density; ``"fraction:F"`` — ``F`` times the maximum density. A string
            holding a number is read as a number. Voxels equal to the level count as inside.
        smooth: ``"none"`` or ``"taubin"`` (volume-preserving λ|μ smoothing, pass band 0.1).
        decimate: ``None`` or the fraction of triangles to remove, in (0, 1) (quadric
            decimation with volume preservation; e.g. 0.5 halves the triangle count).
        largest: keep only the connected surface with the most triangles (drops specks of
            noise — and also the inner walls of a hollow object).
        smooth_iterations: Taubin iterations.

    Returns:
        ``(mesh, summary)``: a ``pyvista.PolyData`` of triangles and its :class:`MeshSummary`
        (with the level used). The level is also kept in ``mesh.field_data["level"]``.

    Raises:
        MeshError: no surface at the level (the message gives the density range), or an
            option is out of range.
    """
    import pyvista as pv

    if smooth not in SMOOTH_MODES:
        raise MeshError(f"mesh: smooth={smooth!r} is not known; use one of {SMOOTH_MODES}")
    if decimate is not None and not 0.0 < float(decimate) < 1.0:
        raise MeshError(
            f"mesh: decimate={decimate} must be the fraction of triangles to remove, in (0, 1)"
        )
    data = np.asarray(volume.data, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise MeshError("mesh: the density holds NaN or inf; clean the volume first")
    value, rule = resolve_level(data, level)
    # Voxels equal to the level count as inside (density ≥ level). Contouring exactly at their
    # value would put vertices on voxel centres and make zero-area triangles (which STL readers
    # merge away), so contour a hair below it instead.
    contour_level = value
    if np.any(data == np.float32(value)):
        contour_level = value - 1e-6 * float(data.max() - data.min())

    padded = np.pad(data, 1, mode="constant", constant_values=float(data.min()))
    spacing = np.asarray(volume.voxel_size_mm, dtype=np.float64)
    grid = pv.ImageData(
        dimensions=padded.shape[::-1],  # VTK is (x, y, z), x fastest = C order of (z, y, x)
        spacing=tuple(spacing),
        origin=tuple(np.asarray(volume.origin_mm, dtype=np.float64) - spacing),
    )
    grid.point_data["density"] = padded.ravel(order="C")
    mesh = grid.contour(
        [contour_level], scalars="density", method="flying_edges", compute_scalars=False
    )
    if mesh.n_cells == 0:  # cannot happen for min < level < max; kept as a guard
        lo, hi = float(data.min()), float(data.max())
        raise MeshError(
            f"mesh: no surface at level {value:g} (density range {_fmt(lo, lo, hi)}–"
            f"{_fmt(hi, lo, hi)}); pass another --level"
        )
    mesh = _clean_arrays(mesh)
    if largest:
        mesh = _clean_arrays(mesh.connectivity("largest"))
    if smooth == "taubin":
        mesh = mesh.smooth_taubin(n_iter=int(smooth_iterations), pass_band=0.1,
                                  normalize_coordinates=True)
    if decimate is not None:
        mesh = mesh.decimate(float(decimate), volume_preservation=True)
    mesh = _orient_outward(mesh)
    mesh.field_data["level"] = np.array([value])
    return mesh, summarize_mesh(mesh, level=value, level_rule=rule)


def _clean_arrays(mesh: pv.PolyData) -> pv.PolyData:
    mesh = mesh.copy(deep=False)
    mesh.clear_data()
    return mesh


def _orient_outward(mesh: pv.PolyData) -> pv.PolyData:
    """Wind triangles so the enclosed signed volume is positive; add point normals."""
    import pyvista as pv

    points, faces = _triangles(mesh)
    if _signed_volume(points, faces) < 0:
        faces = faces[:, ::-1]
    out = pv.PolyData(np.asarray(mesh.points), faces=np.column_stack(
        [np.full(len(faces), 3, dtype=np.int64), faces]).ravel())
    return out.compute_normals(
        cell_normals=False,
        point_normals=True,
        split_vertices=False,
        consistent_normals=False,
        auto_orient_normals=False,
    )


# ----------------------------------------------------------------------------------------------
# Files


@contextlib.contextmanager
def _atomic_suffixed(path: str | os.PathLike, suffix: str) -> Iterator[Path]:
    """Like :func:`optics.atomic.atomic_path`, but the temporary name ends in ``suffix``.

    VTK/pyvista pick the writer from the file extension, so the temporary file must keep it.
    The writer creates the file itself, so it gets the usual permissions (umask), not 0600.
    """
    from optics.atomic import atomic_path

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
    with _atomic_suffixed(path, "." + fmt) as tmp:
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


# ----------------------------------------------------------------------------------------------
# Preview


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
    with _atomic_suffixed(path_png, ".png") as tmp, _quiet_vtk_warnings():
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


# ----------------------------------------------------------------------------------------------
# Distances and comparison


@dataclass(frozen=True)
class DistanceStats:
    """Unsigned point-to-surface distances, µm.

    Attributes:
        mean_um: mean distance of area-weighted samples.
        rms_um: root-mean-square distance of area-weighted samples.
        p95_um: 95th percentile of area-weighted samples.
        hausdorff_um: maximum over the samples and all vertices.
        n_samples: number of area-weighted samples behind mean/RMS/p95.
    """

    mean_um: float
    rms_um: float
    p95_um: float
    hausdorff_um: float
    n_samples: int

    @classmethod
    def from_distances(cls, sample_mm: np.ndarray, vertex_mm: np.ndarray) -> DistanceStats:
        """Build from sample distances and vertex distances (both mm)."""
        s = np.asarray(sample_mm, dtype=np.float64) * 1e3
        v = np.asarray(vertex_mm, dtype=np.float64) * 1e3
        return cls(
            mean_um=float(s.mean()),
            rms_um=float(np.sqrt(np.mean(s**2))),
            p95_um=float(np.percentile(s, 95)),
            hausdorff_um=float(max(s.max(), v.max() if v.size else 0.0)),
            n_samples=int(s.size),
        )

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {
            "mean_um": self.mean_um,
            "rms_um": self.rms_um,
            "p95_um": self.p95_um,
            "hausdorff_um": self.hausdorff_um,
            "n_samples": self.n_samples,
        }


@dataclass(frozen=True, eq=False)
class MeshComparison:
    """Surface distances between a reconstruction and a CAD mesh.

    Attributes:
        recon_to_cad: distances from points on the (aligned) reconstruction to the CAD surface.
        cad_to_recon: distances from points on the CAD surface to the reconstruction.
        symmetric: both directions pooled (equal sample counts); Hausdorff = max of the two.
        align: ``"none"`` or ``"icp"``.
        transform: (4, 4) rigid transform applied to the reconstruction (mm, homogeneous
            coordinates; identity without ICP): ``p_aligned = R p + t``.
        aligned_mesh: the reconstruction after ``transform``, with point data
            ``"distance_um"`` (each vertex's distance to the CAD surface) for colouring.
    """

    recon_to_cad: DistanceStats
    cad_to_recon: DistanceStats
    symmetric: DistanceStats
    align: str
    transform: np.ndarray
    aligned_mesh: pv.PolyData = field(repr=False)

    @property
    def translation_um(self) -> tuple[float, float, float]:
        """Translation part of ``transform``, µm."""
        return tuple(float(v) * 1e3 for v in self.transform[:3, 3])

    @property
    def rotation_deg(self) -> float:
        """Rotation angle of ``transform``, degrees."""
        cos = (np.trace(self.transform[:3, :3]) - 1.0) / 2.0
        return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))

    def to_dict(self) -> dict:
        """JSON-serialisable form (distances in µm, transform in mm)."""
        return {
            "format": _COMPARISON_FORMAT,
            "units": {"distances": "um", "transform": "mm"},
            "align": self.align,
            "transform_mm": [[float(v) for v in row] for row in self.transform],
            "translation_um": list(self.translation_um),
            "rotation_deg": self.rotation_deg,
            "recon_to_cad": self.recon_to_cad.to_dict(),
            "cad_to_recon": self.cad_to_recon.to_dict(),
            "symmetric": self.symmetric.to_dict(),
        }

    def format(self) -> str:
        """A small table for the terminal."""
        lines = [f"{'distance (µm)':<16}{'mean':>9}{'RMS':>9}{'p95':>9}{'Hausdorff':>11}"]
        for name, s in (("recon → CAD", self.recon_to_cad), ("CAD → recon", self.cad_to_recon),
                        ("symmetric", self.symmetric)):
            lines.append(f"{name:<16}{s.mean_um:>9.2f}{s.rms_um:>9.2f}{s.p95_um:>9.2f}"
                         f"{s.hausdorff_um:>11.2f}")
        if self.align == "icp":
            t = ", ".join(f"{v:.2f}" for v in self.translation_um)
            lines.append(f"ICP: translation ({t}) µm, rotation {self.rotation_deg:.3f}°")
        return "\n".join(lines)


def point_to_surface_distance(points: np.ndarray, mesh: pv.PolyData) -> np.ndarray:
    """Exact unsigned distance from each point to the nearest triangle of ``mesh``.

    Candidate triangles come from a k-d tree on triangle centroids; the candidate set grows
    until the bound ``d(p, centroid_k) − r_max ≥ best`` proves no other triangle is closer
    (``r_max`` = largest centroid-to-vertex radius), so the result is exact, not a
    point-to-vertex approximation.

    Args:
        points: (N, 3) query points, mm.
        mesh: surface, mm.

    Returns:
        (N,) distances, mm.
    """
    vertices, faces = _triangles(mesh)
    if len(faces) == 0:
        raise MeshError("compare: a mesh has no triangles")
    tri = vertices[faces]  # (M, 3, 3)
    return _distance_to_triangles(np.asarray(points, dtype=np.float64), tri)


def _median_edge(tri: np.ndarray) -> float:
    """Median edge length of (M, 3, 3) triangles."""
    return float(np.median(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2)))


def _split_long_triangles(tri: np.ndarray, max_edge: float) -> np.ndarray:
    """Bisect the longest edge of (M, 3, 3) triangles until every edge is ≤ ``max_edge``.

    The pieces cover exactly the same surface (they need not share vertices), so distances
    to them equal distances to the original; small pieces keep the k-d tree search tight.
    """
    done = []
    while len(tri):
        edge = np.linalg.norm(tri[:, [1, 2, 0]] - tri, axis=2)  # (M, 3): edge k = v_k → v_k+1
        longest = edge.argmax(axis=1)
        long = edge[np.arange(len(tri)), longest] > max_edge
        done.append(tri[~long])
        tri, longest = tri[long], longest[long]
        if not len(tri):
            break
        roll = (longest[:, None] + np.arange(3)) % 3  # rotate so the longest edge is v0 → v1
        tri = np.take_along_axis(tri, roll[..., None], axis=1)
        mid = 0.5 * (tri[:, 0] + tri[:, 1])
        tri = np.concatenate([
            np.stack([tri[:, 0], mid, tri[:, 2]], axis=1),
            np.stack([mid, tri[:, 1], tri[:, 2]], axis=1),
        ])
    return np.concatenate(done) if done else tri


def _distance_to_triangles(
    points: np.ndarray, tri: np.ndarray, *, max_edge: float | None = None
) -> np.ndarray:
    """Exact distances from (N, 3) points to the union of (M, 3, 3) triangles, mm."""
    from scipy.spatial import cKDTree

    if max_edge is None:
        max_edge = 2.0 * _median_edge(tri)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    max_edge = max(max_edge, math.sqrt(8.0 * area.sum() / 1e6))  # at most ~10⁶ pieces
    if max_edge > 0:
        tri = _split_long_triangles(tri, max_edge)
    n_tri = len(tri)
    centroids = tri.mean(axis=1)  # (M, 3)
    r_max = float(np.linalg.norm(tri - centroids[:, None], axis=2).max())
    tree = cKDTree(centroids)
    out = np.full(len(points), np.inf)
    todo = np.arange(len(points))
    k = min(16, n_tri)
    while todo.size:
        chunk = max(1, 2_000_000 // k)
        unresolved = []
        for start in range(0, todo.size, chunk):
            idx_pts = todo[start:start + chunk]
            p = points[idx_pts]
            dist_c, idx = tree.query(p, k=k)
            dist_c, idx = dist_c.reshape(len(p), k), idx.reshape(len(p), k)
            t = tri[idx]  # (n, k, 3, 3)
            d = _point_triangle_distance(p[:, None, :], t[..., 0, :], t[..., 1, :], t[..., 2, :])
            best = d.min(axis=1)
            out[idx_pts] = best
            if k < n_tri:
                unresolved.append(idx_pts[dist_c[:, -1] - r_max < best])
        todo = np.concatenate(unresolved) if unresolved else np.zeros(0, dtype=np.int64)
        k = min(4 * k, n_tri)
    return out


def _point_triangle_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray,
                             c: np.ndarray) -> np.ndarray:
    """Distance from points ``p`` to triangles ``(a, b, c)``, all (..., 3), broadcast."""
    ab, bc, ca = b - a, c - b, a - c
    n = np.cross(ab, -ca)  # (..., 3)
    nn = np.einsum("...i,...i->...", n, n)
    ap, bp, cp = p - a, p - b, p - c
    inside = (
        (np.einsum("...i,...i->...", np.cross(ab, ap), n) >= 0)
        & (np.einsum("...i,...i->...", np.cross(bc, bp), n) >= 0)
        & (np.einsum("...i,...i->...", np.cross(ca, cp), n) >= 0)
        & (nn > 0)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        plane2 = np.einsum("...i,...i->...", ap, n) ** 2 / nn
    edge2 = np.minimum(np.minimum(_segment_distance2(ap, ab), _segment_distance2(bp, bc)),
                       _segment_distance2(cp, ca))
    return np.sqrt(np.where(inside, plane2, edge2))


def _segment_distance2(ap: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """Squared distance from ``a + ap`` to the segment ``a → a + ab``."""
    ll = np.einsum("...i,...i->...", ab, ab)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.clip(np.einsum("...i,...i->...", ap, ab) / ll, 0.0, 1.0)
    t = np.where(ll > 0, t, 0.0)
    r = ap - t[..., None] * ab
    return np.einsum("...i,...i->...", r, r)


def sample_surface(mesh: pv.PolyData, n: int, *, seed: int = 0) -> np.ndarray:
    """Draw ``n`` points uniformly by area on a mesh's surface.

    Args:
        mesh: surface, mm.
        n: number of points.
        seed: random seed (the same seed gives the same points).

    Returns:
        (n, 3) points, mm.
    """
    points, faces = _triangles(mesh)
    tri = points[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if len(faces) == 0 or area.sum() <= 0:
        raise MeshError("compare: a mesh has no surface area to sample")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(faces), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    w = np.stack([1.0 - s, s * (1.0 - r2), s * r2], axis=1)  # (n, 3) barycentric
    return np.einsum("nk,nki->ni", w, tri[pick])


def _icp(source: pv.PolyData, target: pv.PolyData, *, max_iterations: int = 200) -> np.ndarray:
    """Rigid ICP (VTK) moving ``source`` onto ``target``; returns the (4, 4) matrix, mm."""
    from vtkmodules.vtkCommonDataModel import vtkIterativeClosestPointTransform

    icp = vtkIterativeClosestPointTransform()
    icp.SetSource(source)
    icp.SetTarget(target)
    icp.GetLandmarkTransform().SetModeToRigidBody()
    icp.SetMaximumNumberOfIterations(max_iterations)
    icp.SetMaximumNumberOfLandmarks(min(source.n_points, 5000))
    icp.SetMeanDistanceModeToRMS()
    icp.CheckMeanDistanceOn()
    icp.SetMaximumMeanDistance(1e-7)
    icp.StartByMatchingCentroidsOff()
    icp.Modified()
    icp.Update()
    m = icp.GetMatrix()
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


def compare_meshes(
    recon_mesh: pv.PolyData,
    cad_mesh: pv.PolyData,
    *,
    align: str = "none",
    n_samples: int = 20000,
    seed: int = 0,
) -> MeshComparison:
    """Symmetric surface distances between a reconstructed mesh and a CAD mesh, µm.

    Each surface gets ``n_samples`` area-weighted random points (seeded) plus its vertices; the
    exact point-to-triangle distance of every point to the other surface is computed
    (:func:`point_to_surface_distance`). Mean, RMS and 95th percentile use the area-weighted
    samples (so dense parts of a mesh do not weigh more); Hausdorff is the maximum over samples
    and vertices. With ``align="icp"`` the reconstruction is first moved onto the CAD mesh by
    rigid iterative closest point (VTK, vertex landmarks, no centroid pre-matching: the
    reconstruction is expected in the world frame, ICP removes residual registration errors).

    Args:
        recon_mesh: reconstruction, world frame, mm.
        cad_mesh: reference, mm.
        align: ``"none"`` or ``"icp"``.
        n_samples: area-weighted samples per surface.
        seed: random seed of the samples.

    Raises:
        MeshError: an unknown ``align`` or a mesh without triangles.
    """
    import pyvista as pv

    if align not in ALIGN_MODES:
        raise MeshError(f"compare: align={align!r} is not known; use one of {ALIGN_MODES}")
    for name, m in (("reconstruction", recon_mesh), ("CAD", cad_mesh)):
        if m.n_cells == 0:
            raise MeshError(f"compare: the {name} mesh has no triangles")
    recon = recon_mesh.triangulate() if not recon_mesh.is_all_triangles else recon_mesh
    cad = cad_mesh.triangulate() if not cad_mesh.is_all_triangles else cad_mesh
    recon = pv.PolyData(np.asarray(recon.points, dtype=np.float64), faces=recon.faces)
    cad = pv.PolyData(np.asarray(cad.points, dtype=np.float64), faces=cad.faces)
    transform = np.eye(4)
    if align == "icp":
        transform = _icp(recon, cad)
        recon = recon.transform(transform, inplace=False)

    r_pts, r_faces = _triangles(recon)
    c_pts, c_faces = _triangles(cad)
    r_tri, c_tri = r_pts[r_faces], c_pts[c_faces]
    r_samples = sample_surface(recon, n_samples, seed=seed)
    c_samples = sample_surface(cad, n_samples, seed=seed + 1)
    r_vert = np.unique(r_faces)
    c_vert = np.unique(c_faces)
    # One piece size for both surfaces: big CAD facets are cut to the reconstruction's scale.
    h = 2.0 * min(_median_edge(r_tri), _median_edge(c_tri))
    d_rv_all = np.zeros(len(r_pts))
    d_rs, d_rv_all[r_vert] = np.split(
        _distance_to_triangles(np.concatenate([r_samples, r_pts[r_vert]]), c_tri, max_edge=h),
        [len(r_samples)],
    )
    d_cs, d_cv = np.split(
        _distance_to_triangles(np.concatenate([c_samples, c_pts[c_vert]]), r_tri, max_edge=h),
        [len(c_samples)],
    )

    aligned = recon.copy()
    aligned.point_data["distance_um"] = d_rv_all * 1e3
    return MeshComparison(
        recon_to_cad=DistanceStats.from_distances(d_rs, d_rv_all[r_vert]),
        cad_to_recon=DistanceStats.from_distances(d_cs, d_cv),
        symmetric=DistanceStats.from_distances(
            np.concatenate([d_rs, d_cs]), np.concatenate([d_rv_all[r_vert], d_cv])
        ),
        align=align,
        transform=transform,
        aligned_mesh=aligned,
    )


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
    from optics.atomic import atomic_write_text

    payload = comparison.to_dict()
    if extra:
        payload.update(extra)
    atomic_write_text(path_json, json.dumps(payload, indent=2) + "\n")
    if path_png is not None:
        render_preview(comparison.aligned_mesh, path_png, scalars="distance_um",
                       title="distance to CAD (µm)")


# ----------------------------------------------------------------------------------------------
# Voxelization


def voxelize_mesh(
    mesh: pv.PolyData,
    shape: Sequence[int],
    origin_mm: Sequence[float],
    voxel_size_mm: Sequence[float],
    *,
    supersample: int = 1,
    unit: str = "relative",
) -> Volume:
    """The inside of a closed mesh on a grid: an opaque-object density (1 inside, 0 outside).

    Each voxel is split into ``supersample³`` sub-voxels whose centres are tested against the
    mesh by scan-line rasterization (VTK ``vtkPolyDataToImageStencil``); the voxel value is the
    inside fraction, so edges are anti-aliased (``supersample=1``: plain 0/1 at voxel centres).
    Work proceeds in slabs of z so memory stays bounded.

    Args:
        mesh: closed (watertight) surface, world frame, mm.
        shape: ``(Z, Y, X)`` grid shape.
        origin_mm: (3,) ``(x, y, z)`` centre of voxel ``(0, 0, 0)``, mm.
        voxel_size_mm: (3,) voxel edge lengths ``(x, y, z)``, mm.
        supersample: sub-samples per voxel edge (≥ 1; 3–4 gives smooth edges).
        unit: unit recorded in the Volume.

    Returns:
        A float32 :class:`~recon.volume.Volume` with values in [0, 1].

    Raises:
        MeshError: the mesh is not watertight (its inside is undefined) or the grid is invalid.
    """
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkImagingStencil import vtkImageStencilToImage, vtkPolyDataToImageStencil

    s = int(supersample)
    shape = tuple(int(n) for n in shape)
    if s < 1 or len(shape) != 3 or min(shape) < 1:
        raise MeshError(
            f"voxelize_mesh: need shape (Z, Y, X) ≥ 1 and supersample ≥ 1, got {shape}, {s}"
        )
    summary = summarize_mesh(mesh)
    if not summary.watertight:
        raise MeshError(
            f"voxelize_mesh: the mesh is not watertight ({summary.n_boundary_edges} boundary, "
            f"{summary.n_nonmanifold_edges} non-manifold edges), so its inside is undefined; "
            "close the holes first"
        )
    points, faces = _triangles(mesh)
    import pyvista as pv

    surface = pv.PolyData(points, faces=np.column_stack(
        [np.full(len(faces), 3, dtype=np.int64), faces]).ravel())
    voxel = np.asarray(voxel_size_mm, dtype=np.float64)
    origin = np.asarray(origin_mm, dtype=np.float64)
    fine_spacing = voxel / s
    fine_origin = origin - 0.5 * voxel + 0.5 * fine_spacing
    nz, ny, nx = shape
    nxf, nyf = nx * s, ny * s
    slab = max(1, int(32_000_000 // (nxf * nyf * s)))  # coarse z-slices per pass
    out = np.empty(shape, dtype=np.float32)
    for k0 in range(0, nz, slab):
        k1 = min(nz, k0 + slab)
        stencil = vtkPolyDataToImageStencil()
        stencil.SetInputData(surface)
        stencil.SetOutputOrigin(*fine_origin)
        stencil.SetOutputSpacing(*fine_spacing)
        stencil.SetOutputWholeExtent(0, nxf - 1, 0, nyf - 1, k0 * s, k1 * s - 1)
        to_image = vtkImageStencilToImage()
        to_image.SetInputConnection(stencil.GetOutputPort())
        to_image.SetInsideValue(1)
        to_image.SetOutsideValue(0)
        to_image.SetOutputScalarTypeToUnsignedChar()
        to_image.Update()
        fine = vtk_to_numpy(to_image.GetOutput().GetPointData().GetScalars())
        fine = fine.reshape((k1 - k0) * s, nyf, nxf)  # VTK x fastest = C order (z, y, x)
        block = fine.reshape(k1 - k0, s, ny, s, nx, s).astype(np.float32)
        out[k0:k1] = block.mean(axis=(1, 3, 5))
    return Volume(
        data=out,
        origin_mm=tuple(float(v) for v in origin),
        voxel_size_mm=tuple(float(v) for v in voxel),
        unit=unit,
        meta={"source": "voxelize_mesh", "supersample": s},
    )


# ----------------------------------------------------------------------------------------------
# The reference CAD object


def make_doe_mesh(
    *,
    height_mm: float = 1.6,
    stroke_mm: float = 0.25,
    depth_mm: float = 0.4,
    gap_mm: float = 0.1,
    widths_mm: tuple[float, float, float] = (0.72, 0.80, 0.58),
    arc_segments: int = 32,
) -> pv.PolyData:
    """The word "DOE" as a closed, outward-normal triangle mesh in mm, centred on the origin.

    Sans-serif capitals in the x–y plane (x to the right, y up), extruded along z: "D" is a
    stem with an elliptical bowl, "O" an elliptical ring, "E" a stem with three arms (the middle
    one shorter). With the defaults the letters are 1.6 mm tall with a 0.25 mm stroke, 0.4 mm
    deep, widths 0.72/0.80/0.58 mm and 0.1 mm gaps: the word spans 2.30 × 1.60 × 0.40 mm, inside
    the box ``|x| ≤ 1.2, |y| ≤ 0.8, |z| ≤ 0.2`` mm (:data:`DOE_BOX_MM`). Caps are triangulated
    from the outlines only (no T-junctions), so the mesh is watertight.

    ``data/meshes/doe.stl`` is this mesh, made with::

        python - <<'EOF'
        from recon.mesh import make_doe_mesh, write_mesh
        write_mesh(make_doe_mesh(), "data/meshes/doe.stl")
        EOF

    Args:
        height_mm: letter height (y), mm.
        stroke_mm: stroke width, mm.
        depth_mm: extrusion depth (z), mm.
        gap_mm: space between letters, mm.
        widths_mm: widths of D, O, E, mm.
        arc_segments: segments on each curved outline (D bowl: this many; O: twice).
    """
    import pyvista as pv

    h, t = float(height_mm), float(stroke_mm)
    w_d, w_o, w_e = (float(v) for v in widths_mm)
    letters = [
        _letter_d(w_d, h, t, arc_segments),
        _letter_o(w_o, h, t, 2 * arc_segments),
        _letter_e(w_e, h, t),
    ]
    total = w_d + w_o + w_e + 2 * gap_mm
    x = -0.5 * total
    verts2d, tris = [], []
    offset = 0
    for (v, f), width in zip(letters, (w_d, w_o, w_e), strict=True):
        verts2d.append(v + np.array([x, -0.5 * h]))
        tris.append(f + offset)
        offset += len(v)
        x += width + gap_mm
    points, faces = _extrude(np.concatenate(verts2d), np.concatenate(tris), float(depth_mm))
    mesh = pv.PolyData(points, faces=np.column_stack(
        [np.full(len(faces), 3, dtype=np.int64), faces]).ravel())
    return _orient_outward(mesh)


def _ring(outer: np.ndarray, inner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate the band between two matched closed outlines (n, 2) → (verts, tris)."""
    n = len(outer)
    i = np.arange(n)
    j = (i + 1) % n
    o, q = i, i + n
    tris = np.concatenate([np.stack([o, o[j], q[j]], 1), np.stack([o, q[j], q], 1)])
    return np.concatenate([outer, inner]), tris


def _letter_o(width: float, h: float, t: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    ang = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    c = np.array([0.5 * width, 0.5 * h])
    unit = np.stack([np.cos(ang), np.sin(ang)], 1)
    outer = c + unit * [0.5 * width, 0.5 * h]
    inner = c + unit * [0.5 * width - t, 0.5 * h - t]
    return _ring(outer, inner)


def _letter_d(width: float, h: float, t: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    xc = min(max(1.2 * t, 0.4 * width), width - 1.5 * t)  # where the bowl starts
    ang = np.linspace(0.5 * np.pi, -0.5 * np.pi, n + 1)
    unit = np.stack([np.cos(ang), np.sin(ang)], 1)
    cy = 0.5 * h
    outer = np.concatenate([[[0.0, 0.0], [0.0, h]], [xc, cy] + unit * [width - xc, cy]])
    inner = np.concatenate([[[t, t], [t, h - t]], [xc, cy] + unit * [width - xc - t, cy - t]])
    return _ring(outer, inner)


def _letter_e(width: float, h: float, t: float) -> tuple[np.ndarray, np.ndarray]:
    xs = np.array([0.0, t, 0.85 * width, width])
    ys = np.array([0.0, t, 0.5 * (h - t), 0.5 * (h + t), h - t, h])
    cells = [(0, r) for r in range(5)] + [(1, 0), (2, 0), (1, 2), (1, 4), (2, 4)]  # (col, row)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")  # (row, col)
    verts = np.stack([gx.ravel(), gy.ravel()], 1)
    ncol = len(xs)
    tris = []
    for col, row in cells:
        a, b = row * ncol + col, row * ncol + col + 1
        c, d = (row + 1) * ncol + col + 1, (row + 1) * ncol + col
        tris += [(a, b, c), (a, c, d)]
    tris = np.array(tris)
    used, tris = np.unique(tris, return_inverse=True)
    return verts[used], tris.reshape(-1, 3)


def _extrude(verts2d: np.ndarray, tris: np.ndarray, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """Extrude a planar triangulation along z (±depth/2) into a closed surface."""
    a, b, c = (verts2d[tris[:, k]] for k in range(3))
    cross = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    tris = np.where((cross < 0)[:, None], tris[:, ::-1], tris)  # counter-clockwise seen from +z
    n = len(verts2d)
    points = np.concatenate([
        np.column_stack([verts2d, np.full(n, -0.5 * depth)]),
        np.column_stack([verts2d, np.full(n, 0.5 * depth)]),
    ])
    directed = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    keys = set(map(tuple, directed))
    boundary = np.array([e for e in directed if (e[1], e[0]) not in keys])  # interior on the left
    e0, e1 = boundary[:, 0], boundary[:, 1]
    walls = np.concatenate([np.stack([e0, e1, e1 + n], 1), np.stack([e0, e1 + n, e0 + n], 1)])
    faces = np.concatenate([tris + n, tris[:, ::-1], walls])
    return points, faces
