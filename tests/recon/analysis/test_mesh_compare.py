"""Surface distances against a CAD mesh, and rigid ICP."""

import numpy as np
import pytest

from recon.analysis.mesh_compare import compare_meshes, point_to_surface_distance  # noqa: E402
from recon.errors import MeshError  # noqa: E402

pv = pytest.importorskip("pyvista")


def test_point_to_surface_distance_is_to_triangles_not_vertices():
    cube = pv.Cube(x_length=1.0, y_length=1.0, z_length=1.0)  # faces at ±0.5
    points = np.array([[0.0, 0.0, 1.0], [2.0, 0.1, -0.2], [1.0, 1.0, 1.0], [0.5, 0.0, 0.0]])
    expected = [0.5, 1.5, np.sqrt(3) * 0.5, 0.0]
    np.testing.assert_allclose(point_to_surface_distance(points, cube), expected, atol=1e-12)


def test_compare_with_itself_is_zero(sphere_mesh):
    mesh, _ = sphere_mesh
    c = compare_meshes(mesh, mesh, n_samples=3000)
    for stats in (c.recon_to_cad, c.cad_to_recon, c.symmetric):
        assert stats.hausdorff_um < 1e-3
    assert c.symmetric.n_samples == 6000
    np.testing.assert_array_equal(c.transform, np.eye(4))


def test_compare_offset_by_50um(sphere_mesh):
    mesh, _ = sphere_mesh
    grown = mesh.copy()
    grown.points = grown.points + 0.05 * np.asarray(mesh.point_data["Normals"])  # +50 µm
    c = compare_meshes(grown, mesh, n_samples=3000)
    for stats in (c.recon_to_cad, c.cad_to_recon, c.symmetric):
        assert stats.mean_um == pytest.approx(50.0, abs=3.0)
        assert stats.hausdorff_um == pytest.approx(50.0, abs=3.0)
    # each grown vertex is 50 µm from its origin on the surface, and the facets near it lean
    # by a few degrees from its normal: a little closer, never farther
    d = np.asarray(c.aligned_mesh.point_data["distance_um"])
    assert d.max() < 50.001 and d.min() > 49.0


def test_compare_shifted_sphere_mean_is_half_the_shift(sphere_mesh):
    # a sphere moved by s is at distance s|cos θ| from the original: mean s/2, max s
    mesh, _ = sphere_mesh
    shifted = mesh.translate((0.0, 0.05, 0.0), inplace=False)
    c = compare_meshes(shifted, mesh, n_samples=3000)
    assert c.symmetric.mean_um == pytest.approx(25.0, abs=1.5)
    assert c.symmetric.hausdorff_um == pytest.approx(50.0, abs=1.5)


def test_icp_recovers_a_rigid_offset(doe):
    angle = np.radians(1.5)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1]])
    shift = np.array([0.03, -0.02, 0.01])
    moved = doe.copy()
    moved.points = np.asarray(doe.points) @ rot.T + shift
    before = compare_meshes(moved, doe, n_samples=2000)
    after = compare_meshes(moved, doe, align="icp", n_samples=2000)
    assert before.symmetric.mean_um > 10
    assert after.symmetric.hausdorff_um < 0.5
    assert after.rotation_deg == pytest.approx(1.5, abs=0.01)
    # the ICP transform undoes the offset: T (R p + t) = p
    np.testing.assert_allclose(after.transform[:3, :3] @ rot, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(after.transform[:3, :3] @ shift + after.transform[:3, 3], 0,
                               atol=1e-5)
    assert "ICP" in after.format()


def test_compare_rejects_bad_align(sphere_mesh):
    mesh, _ = sphere_mesh
    with pytest.raises(MeshError, match="align"):
        compare_meshes(mesh, mesh, align="best")
