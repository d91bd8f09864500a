"""Iso-surfaces in world millimetres: level choice, marching cubes, smoothing, decimation, topology."""

import json
import subprocess
import sys

import numpy as np
import pytest

from recon.analysis.mesh import MIN_PART, extract_mesh, otsu_level, remove_specks, resolve_level  # noqa: E402
from recon.errors import MeshError  # noqa: E402
from recon.io.meshio import write_mesh  # noqa: E402
from recon.io.volume import Volume  # noqa: E402
from tests.recon.meshes import CENTRE, ORIGIN, RADIUS, VOXEL, sphere_volume

pv = pytest.importorskip("pyvista")


def face_normals(mesh):
    pts, faces = np.asarray(mesh.points, float), mesh.regular_faces
    tri = pts[faces]
    return tri.mean(1), np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def test_sphere_area_and_volume_match_analytic(sphere_mesh):
    _, s = sphere_mesh
    assert s.area_mm2 == pytest.approx(4 * np.pi * RADIUS**2, rel=0.02)
    assert s.volume_mm3 == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.02)
    assert s.watertight and s.oriented
    assert s.n_boundary_edges == 0 and s.n_nonmanifold_edges == 0
    assert s.n_components == 1
    assert s.level == 0.5 and s.level_rule == "absolute"


def test_sphere_normals_point_outward(sphere_mesh):
    mesh, s = sphere_mesh
    assert s.volume_mm3 > 0  # positive signed volume = outward winding
    centres, normals = face_normals(mesh)
    assert np.mean(np.einsum("ij,ij->i", normals, centres - CENTRE) > 0) > 0.999
    point_normals = np.asarray(mesh.point_data["Normals"])
    assert np.mean(np.einsum("ij,ij->i", point_normals, mesh.points - np.array(CENTRE)) > 0) > 0.999


def test_sphere_bounds_are_world_mm(sphere_mesh):
    mesh, s = sphere_mesh
    tol = 0.2 * min(VOXEL)  # a half-voxel or axis-order bug is ≥ 0.02 mm
    lo, hi = s.bounds_mm
    np.testing.assert_allclose(lo, np.array(CENTRE) - RADIUS, atol=tol)
    np.testing.assert_allclose(hi, np.array(CENTRE) + RADIUS, atol=tol)
    np.testing.assert_allclose(np.asarray(mesh.points).mean(0), CENTRE, atol=tol)
    # every vertex lies on the sphere (to a fraction of a voxel)
    r = np.linalg.norm(np.asarray(mesh.points, float) - CENTRE, axis=1)
    assert np.abs(r - RADIUS).max() < tol


def test_auto_level_is_otsu_and_reported(sphere):
    mesh, s = extract_mesh(sphere)  # level="auto"
    assert 0.3 < s.level < 0.7
    assert "Otsu" in s.level_rule and "Otsu" in s.format()
    # the level is a density: its line says in which unit (the volume's)
    assert s.level_unit == sphere.unit and f"{s.level:.4g} {sphere.unit} (auto" in s.format()
    assert mesh.field_data["level"][0] == pytest.approx(s.level)
    assert s.area_mm2 == pytest.approx(4 * np.pi, rel=0.03)


def test_otsu_splits_two_classes():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0.0, 0.05, 5000), rng.normal(1.0, 0.05, 1000)])
    assert 0.3 < otsu_level(values) < 0.7
    binary = np.zeros(1000)
    binary[:100] = 2.0
    assert otsu_level(binary) == pytest.approx(1.0, abs=0.01)  # middle of the empty gap


def test_fraction_and_string_levels(sphere):
    data = sphere.data * 3.0
    assert resolve_level(data, "fraction:0.5")[0] == pytest.approx(1.5)
    assert resolve_level(data, "0.75") == (0.75, "absolute")
    _, s = extract_mesh(Volume(data, ORIGIN, VOXEL), level="fraction:0.5")
    assert s.volume_mm3 == pytest.approx(4 / 3 * np.pi, rel=0.02)


def test_object_touching_the_grid_edge_is_closed():
    data = np.zeros((10, 12, 14), np.float32)
    data[:, :6, :] = 1.0  # a slab cut by five faces of the grid
    _, s = extract_mesh(Volume(data, (0.0, 0.0, 0.0), (0.1, 0.1, 0.1)), level=0.5)
    assert s.watertight and s.oriented
    # the padding voxel puts the faces half a voxel outside the grid: a 1.4 × 0.6 × 1.0 mm
    # box from (−0.05, −0.05, −0.05); marching cubes chamfers its 12 mm of edges by
    # ½ (0.05 mm)² each
    assert s.volume_mm3 == pytest.approx(1.4 * 0.6 * 1.0 - 12 * 0.5 * 0.05**2, rel=2e-3)
    np.testing.assert_allclose(s.bounds_mm[0], (-0.05, -0.05, -0.05), atol=1e-6)


def test_voxels_at_the_level_count_as_inside(tmp_path):
    data = np.zeros((12, 12, 12), np.float32)
    data[2:10, 2:10, 2:10] = 0.5  # a plateau exactly at the level around a core of 1
    data[4:8, 3:9, 4:8] = 1.0
    mesh, s = extract_mesh(Volume(data, (0.1, 0.2, 0.3), (0.1, 0.1, 0.1)), level=0.5)
    assert s.size_mm == pytest.approx((0.7, 0.7, 0.7), abs=1e-4)  # wraps the 8³ plateau
    assert s.watertight
    # no zero-area triangles: an STL reader (which merges points) keeps every triangle
    back = pv.read(write_mesh(mesh, tmp_path / "plateau.stl"))
    assert back.n_cells == s.n_triangles


def test_no_surface_raises_with_density_range(sphere):
    dim = Volume(sphere.data * 0.31, ORIGIN, VOXEL)
    msg = "no surface at level 0.5 (density range 0.00–0.31); pass --level below 0.31"
    with pytest.raises(MeshError) as err:
        extract_mesh(dim, level=0.5)
    assert msg in str(err.value)
    with pytest.raises(MeshError, match="pass --level above 0.00"):
        extract_mesh(dim, level=-1.0)
    with pytest.raises(MeshError, match="constant"):
        extract_mesh(Volume(np.ones((4, 4, 4), np.float32), ORIGIN, VOXEL))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"level": "fraction:2"}, "fraction between 0 and 1"),
        ({"level": "half"}, "not understood"),
        ({"smooth": "laplace"}, "smooth="),
        ({"decimate": 1.5}, "decimate="),
        ({"min_part": 1.0}, "--min-part 1.0 must be a fraction"),
        ({"min_part": -0.1}, "--min-part -0.1 must be a fraction"),
    ],
)
def test_invalid_options_raise(sphere, kwargs, match):
    with pytest.raises(MeshError, match=match):
        extract_mesh(sphere, **kwargs)


def test_taubin_keeps_volume(sphere, sphere_mesh):
    _, plain = sphere_mesh
    _, smooth = extract_mesh(sphere, level=0.5, smooth="taubin")
    assert smooth.volume_mm3 == pytest.approx(plain.volume_mm3, rel=0.005)
    assert smooth.watertight


def test_decimate_halves_triangles_and_stays_closed(sphere, sphere_mesh):
    _, plain = sphere_mesh
    mesh, s = extract_mesh(sphere, level=0.5, decimate=0.5)
    assert s.n_triangles == pytest.approx(plain.n_triangles / 2, rel=0.05)
    assert s.watertight and s.oriented
    assert s.volume_mm3 == pytest.approx(plain.volume_mm3, rel=0.01)


def test_largest_drops_specks(sphere):
    data = sphere.data.copy()
    data[2:4, 2:4, 2:4] = 1.0  # a speck in a corner
    vol = Volume(data, ORIGIN, VOXEL)
    _, both = extract_mesh(vol, level=0.5, min_part=0)
    _, one = extract_mesh(vol, level=0.5, largest=True, min_part=0)
    assert both.n_components == 2 and one.n_components == 1
    assert one.volume_mm3 == pytest.approx(4 / 3 * np.pi, rel=0.02)
    _, cleaned = extract_mesh(vol, level=0.5)  # 8 voxels against ~4·10⁴: below MIN_PART of the mass
    assert cleaned.n_components == 1 and cleaned.specks_removed == 1 and cleaned.cavities_filled == 0
    assert cleaned.volume_mm3 == pytest.approx(one.volume_mm3, rel=1e-9)


def _noisy_sphere(seed=0):
    """The sphere with voxel noise: specks of 1–2 voxels outside it and bubbles inside it."""
    from scipy.ndimage import binary_erosion

    rng = np.random.default_rng(seed)
    vol = sphere_volume()
    data = vol.data.copy()
    k, j, i = np.indices(data.shape)
    lattice = (k % 4 == 1) & (j % 4 == 1) & (i % 4 == 1)  # pairs 4 voxels apart never touch
    for mask, value in ((data < 0.05, 0.8), (data > 0.95, 0.2)):
        where = np.argwhere(binary_erosion(mask, iterations=3) & lattice)  # 3 voxels from the surface
        for z, y, x in where[rng.choice(len(where), 60, replace=False)]:
            data[z, y, x:x + 2] = value  # a pair of voxels
    return Volume(data, vol.origin_mm, vol.voxel_size_mm)


def test_specks_and_bubbles_of_voxel_noise_are_removed_by_default():
    """A cloud's iso-surface in a noisy map is one closed surface, not one per speck and bubble."""
    noisy = _noisy_sphere()
    _, raw = extract_mesh(noisy, level=0.5, min_part=0)
    _, mesh = extract_mesh(noisy, level=0.5)
    assert raw.n_components > 100  # every speck and bubble its own surface
    assert mesh.n_components == 1 and mesh.watertight and mesh.oriented
    assert mesh.specks_removed == 60 and mesh.cavities_filled == 60
    assert mesh.volume_mm3 == pytest.approx(4 / 3 * np.pi, rel=0.02)
    assert "60 speck(s) removed, 60 cavity(ies) filled" in mesh.format()
    assert json.loads(json.dumps(mesh.to_dict()))["specks_removed"] == 60


def test_a_real_hollow_and_a_second_cloud_are_kept():
    """Only parts below MIN_PART go: a shell's inner wall and a 10 % cloud beside it stay."""
    outer, inner = sphere_volume(radius=0.7), sphere_volume(radius=0.4)
    data = outer.data - inner.data  # a shell 0.3 mm thick: its cavity is ~23 % of its volume
    small = sphere_volume(radius=0.3, centre=(ORIGIN[0] + 0.35, ORIGIN[1] + 0.35, ORIGIN[2] + 0.35))
    data = np.maximum(data, small.data)  # a second cloud, ~10 % of the shell's mass, apart from it
    _, mesh = extract_mesh(Volume(data, outer.origin_mm, outer.voxel_size_mm), level=0.5)
    assert mesh.n_components == 3 and mesh.specks_removed == 0 and mesh.cavities_filled == 0
    assert mesh.watertight


def test_the_heaviest_part_stays_when_every_part_is_small():
    data = np.zeros((20, 20, 20), np.float32)
    data[2:18:2, 2:18:2, 2:18:2] = 1.0  # 512 single voxels, each 0.2 % of the mass
    data[10, 10, 10] = 0.0
    data[11, 11, 11] = 1.5  # the heaviest
    cleaned, specks, cavities = remove_specks(data, 0.5, min_part=0.01)
    assert specks == int((data >= 0.5).sum()) - 1 and cavities == 0
    assert np.argwhere(cleaned >= 0.5).tolist() == [[11, 11, 11]]
    assert remove_specks(data, 0.5, min_part=0)[0] is data  # 0 keeps everything
    assert MIN_PART == 1e-3


def test_summary_format_and_dict(sphere_mesh):
    _, s = sphere_mesh
    text = s.format()
    assert "watertight   yes" in text and "mm²" in text and "mm³" in text
    d = json.loads(json.dumps(s.to_dict()))
    assert d["n_triangles"] == s.n_triangles and d["level"] == 0.5


def test_import_does_not_load_pyvista():
    code = (
        "import sys, recon.analysis.mesh, recon.analysis.mesh_compare, recon.io.meshio, recon.jobs.mesh; "
        "bad = [m for m in ('pyvista', 'vtk', 'vtkmodules') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
