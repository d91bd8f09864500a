"""A reconstructed surface against a CAD mesh: symmetric surface distances (µm), optionally after rigid ICP.

ICP: Besl & McKay 1992, doi:10.1109/34.121791. Distances are exact point-to-triangle distances
from points sampled uniformly on each surface.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from recon.analysis.mesh import mesh_triangles
from recon.errors import MeshError

if TYPE_CHECKING:
    import pyvista as pv

__all__ = [
    "ALIGN_MODES",
    "DistanceStats",
    "MeshComparison",
    "compare_meshes",
    "point_to_surface_distance",
    "sample_surface",
]


ALIGN_MODES = ("none", "icp")


_COMPARISON_FORMAT = "recon.mesh_comparison/1"


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
        return dataclasses.asdict(self)


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
    vertices, faces = mesh_triangles(mesh)
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
    points, faces = mesh_triangles(mesh)
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

    r_pts, r_faces = mesh_triangles(recon)
    c_pts, c_faces = mesh_triangles(cad)
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
