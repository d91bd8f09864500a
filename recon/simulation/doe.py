"""The reference CAD test object: the word "DOE" (``data/meshes/doe.stl``), extruded letters in mm."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recon.analysis.mesh import orient_outward

if TYPE_CHECKING:
    import pyvista as pv

__all__ = ["DOE_BOX_MM", "make_doe_mesh"]


#: Half-extents ``(x, y, z)`` mm of the box centred on the origin that holds the default
#: :func:`make_doe_mesh` (the word is 2.30 × 1.60 × 0.40 mm; the box is 2.4 × 1.6 × 0.4 mm).
DOE_BOX_MM = (1.2, 0.8, 0.2)


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
        from recon.io.meshio import write_mesh
        from recon.simulation.doe import make_doe_mesh
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
    return orient_outward(mesh)


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
