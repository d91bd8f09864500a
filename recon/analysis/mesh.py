"""Iso-surfaces of densities in millimetres: level choice, marching cubes, topology summary.

Everything here works in the world frame in millimetres (REFERENCE §6): a mesh vertex at
``(x, y, z)`` is the point ``(x, y, z)`` mm of the volume it came from, whose voxel ``(k, j, i)``
has its centre at ``origin_mm + (i, j, k) * voxel_size_mm``.

* :func:`resolve_level` / :func:`otsu_level` — the iso-level: Otsu's threshold, a value, or a
  fraction of the maximum.
* :func:`remove_specks` — the region above the level without its specks (parts holding less than
  a fraction of its mass) and with its small cavities filled: a fit's voxel-scale noise.
* :func:`extract_mesh` — iso-surface of a :class:`~recon.io.volume.Volume` by marching cubes
  (Lorensen & Cline 1987, doi:10.1145/37402.37422; VTK's flying-edges variant, Schroeder et al.
  2015, doi:10.1109/LDAV.2015.7348069), after padding with background so the surface closes;
  outward normals (from high density to low), optional Taubin smoothing (Taubin 1995,
  doi:10.1145/218380.218473), decimation and keep-largest-component.
* :func:`summarize_mesh` / :class:`MeshSummary` — triangles, area, enclosed volume, watertightness.

pyvista/VTK is imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recon.errors import MeshError
from recon.io.volume import Volume

if TYPE_CHECKING:
    import pyvista as pv

__all__ = [
    "MIN_PART",
    "MeshSummary",
    "SMOOTH_MODES",
    "extract_mesh",
    "mesh_triangles",
    "orient_outward",
    "otsu_level",
    "remove_specks",
    "resolve_level",
    "summarize_mesh",
]


SMOOTH_MODES = ("none", "taubin")


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
        level_unit: the unit of ``level`` (the volume's density unit), "" when unknown.
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
    level_unit: str = ""
    specks_removed: int = 0
    cavities_filled: int = 0

    @property
    def size_mm(self) -> tuple[float, float, float]:
        """Edge lengths ``(x, y, z)`` of the bounding box, mm."""
        lo, hi = self.bounds_mm
        return tuple(float(b - a) for a, b in zip(lo, hi, strict=True))

    def to_dict(self) -> dict:
        """JSON-serialisable form (units in the key names), with the box size."""
        out = dataclasses.asdict(self)
        out["bounds_mm"] = [list(corner) for corner in self.bounds_mm]
        out["size_mm"] = list(self.size_mm)
        return out

    def format(self) -> str:
        """A few aligned lines for the terminal."""
        lo, hi = self.bounds_mm
        plural = "" if self.n_components == 1 else "s"
        lines = [
            f"mesh: {self.n_triangles} triangles, {self.n_vertices} vertices, "
            f"{self.n_components} component{plural}"
        ]
        if self.level is not None:
            unit = f" {self.level_unit}" if self.level_unit else ""
            lines.append(f"  level        {self.level:.4g}{unit} ({self.level_rule})")
        if self.specks_removed or self.cavities_filled:
            lines.append(f"  cleaned      {self.specks_removed} speck(s) removed, {self.cavities_filled} "
                         "cavity(ies) filled (--min-part)")
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
    mesh: pv.PolyData, *, level: float | None = None, level_rule: str = "", level_unit: str = ""
) -> MeshSummary:
    """Measure a triangle mesh (any mesh is triangulated first): area, enclosed volume, closure.

    Args:
        mesh: surface, world frame, mm.
        level: iso-level to record, if the mesh came from a density.
        level_rule: how that level was chosen.
        level_unit: the level's unit (the density's).
    """
    points, faces = mesh_triangles(mesh)
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
        level_unit=level_unit,
    )


def mesh_triangles(mesh: pv.PolyData) -> tuple[np.ndarray, np.ndarray]:
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


#: The default of :func:`remove_specks`: a part above the level holding less than this fraction of
#: the mass above it, or a cavity of less than this fraction of its volume, is noise.
MIN_PART = 1e-3


def remove_specks(data: np.ndarray, level: float, min_part: float = MIN_PART) -> tuple[np.ndarray, int, int]:
    """``data`` with the specks above ``level`` lowered and the small cavities below it raised.

    A fit's map holds noise at the scale of its voxels, which the iso-surface of its level turns
    into specks around the object and bubbles within it: thousands of surfaces for one cloud.
    The region ``data ≥ level`` is split into its face-connected parts; a part holding less than
    ``min_part`` of the region's mass (the sum of its values), the heaviest part excepted, is set
    to the volume's minimum. A cavity — a face-connected part of the rest that does not reach the
    grid's faces — of fewer than ``min_part`` of the region's voxels is raised to just above
    ``level``. A real hollow or a detached piece of the object larger than that is kept.

    Args:
        data: (Z, Y, X) the density.
        level: the iso-level.
        min_part: the fraction (0 keeps everything).

    Returns:
        (the cleaned copy, specks removed, cavities filled).
    """
    from scipy import ndimage

    inside = data >= level
    if not min_part > 0 or not inside.any():
        return data, 0, 0
    out = np.array(data, copy=True)
    labels, n = ndimage.label(inside)
    mass = ndimage.sum_labels(np.maximum(data, 0), labels, np.arange(1, n + 1))
    small = mass < min_part * mass.sum()
    small[np.argmax(mass)] = False  # the heaviest part stays, however fragmented the region
    specks = np.flatnonzero(small) + 1
    if specks.size:
        out[np.isin(labels, specks)] = data.min()
    kept = out >= level
    holes = ndimage.binary_fill_holes(kept) & ~kept
    labels, n = ndimage.label(holes)
    sizes = ndimage.sum_labels(np.ones(data.shape, np.float32), labels, np.arange(1, n + 1))
    small = np.flatnonzero(sizes < min_part * kept.sum()) + 1
    if small.size:  # just above the level: inside, and no voxel made equal to it (see extract_mesh)
        above = np.nextafter(np.asarray(level, out.dtype), np.asarray(np.inf, out.dtype))
        out[np.isin(labels, small)] = above
    return out, int(specks.size), int(small.size)


def extract_mesh(
    volume: Volume,
    *,
    level: float | str = "auto",
    smooth: str = "none",
    decimate: float | None = None,
    largest: bool = False,
    smooth_iterations: int = 20,
    min_part: float = MIN_PART,
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
        min_part: specks and cavities smaller than this fraction are removed before contouring
            (:func:`remove_specks`, counted in the summary); 0 keeps everything.

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
    if not 0.0 <= float(min_part) < 1.0:
        raise MeshError(f"mesh: --min-part {min_part} must be a fraction in [0, 1) (0 keeps every speck)")
    value, rule = resolve_level(data, level)
    data, specks, cavities = remove_specks(data, value, float(min_part))
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
    mesh = orient_outward(mesh)
    mesh.field_data["level"] = np.array([value])
    summary = summarize_mesh(mesh, level=value, level_rule=rule, level_unit=volume.unit)
    return mesh, dataclasses.replace(summary, specks_removed=specks, cavities_filled=cavities)


def _clean_arrays(mesh: pv.PolyData) -> pv.PolyData:
    mesh = mesh.copy(deep=False)
    mesh.clear_data()
    return mesh


def orient_outward(mesh: pv.PolyData) -> pv.PolyData:
    """Wind triangles so the enclosed signed volume is positive; add point normals."""
    import pyvista as pv

    points, faces = mesh_triangles(mesh)
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
