"""Mesh files: binary STL size, every format written and read back, format errors."""

import numpy as np
import pytest

from recon.analysis.mesh import summarize_mesh  # noqa: E402
from recon.errors import MeshError  # noqa: E402
from recon.io.meshio import MESH_FORMATS, write_mesh  # noqa: E402

pv = pytest.importorskip("pyvista")


def test_binary_stl_size_and_round_trip(sphere_mesh, tmp_path):
    mesh, s = sphere_mesh
    path = write_mesh(mesh, tmp_path / "sphere.stl")
    assert path.stat().st_size == 84 + 50 * s.n_triangles
    back = pv.read(path)
    assert back.n_cells == s.n_triangles
    b = summarize_mesh(back)
    assert b.watertight and b.oriented
    assert b.volume_mm3 == pytest.approx(s.volume_mm3, rel=1e-5)
    np.testing.assert_allclose(b.bounds_mm, s.bounds_mm, atol=1e-6)


@pytest.mark.parametrize("fmt", MESH_FORMATS)
def test_each_format_writes_and_reads_back(sphere_mesh, tmp_path, fmt):
    mesh, s = sphere_mesh
    path = write_mesh(mesh, tmp_path / f"out.{fmt}")
    back = pv.read(path)
    assert back.n_cells == s.n_triangles
    np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [f"out.{fmt}"]  # no temporary left


def test_format_argument_and_unknown_format(sphere_mesh, tmp_path):
    mesh, s = sphere_mesh
    path = write_mesh(mesh, tmp_path / "mesh.bin", format="stl")
    assert path.stat().st_size == 84 + 50 * s.n_triangles
    with pytest.raises(MeshError, match="stl, ply, obj, vtp"):
        write_mesh(mesh, tmp_path / "mesh.step")
    assert not (tmp_path / "mesh.step").exists()
