"""Tests of recon.mesh: iso-surfaces in world millimetres, files, distances, voxelization."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pv = pytest.importorskip("pyvista")

from recon import mesh as M  # noqa: E402
from recon.errors import BackendUnavailableError, MeshError  # noqa: E402
from recon.volume import Volume  # noqa: E402

DOE_STL = Path(__file__).resolve().parents[2] / "data" / "meshes" / "doe.stl"

# Sphere on an anisotropic grid with a non-zero origin, off-centre by different amounts along
# x, y, z: a swapped axis or a half-voxel shift moves the mesh by ≥ 0.02 mm.
RADIUS = 1.0
SHAPE = (44, 60, 52)  # (Z, Y, X)
VOXEL = (0.05, 0.04, 0.055)  # (x, y, z) mm
ORIGIN = (0.3, -0.7, 1.1)  # (x, y, z) mm, centre of voxel (0, 0, 0)
CENTRE = (ORIGIN[0] + 1.31, ORIGIN[1] + 1.17, ORIGIN[2] + 1.21)
RAMP_MM = 0.05  # width of the anti-aliased edge; the 0.5 level sits exactly at r = RADIUS


def sphere_volume(radius=RADIUS, centre=CENTRE, shape=SHAPE, voxel=VOXEL, origin=ORIGIN):
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    r = np.sqrt(
        (origin[0] + x * voxel[0] - centre[0]) ** 2
        + (origin[1] + y * voxel[1] - centre[1]) ** 2
        + (origin[2] + z * voxel[2] - centre[2]) ** 2
    )
    data = np.clip(0.5 - (r - radius) / RAMP_MM, 0.0, 1.0).astype(np.float32)
    return Volume(data=data, origin_mm=origin, voxel_size_mm=voxel)


@pytest.fixture(scope="module")
def sphere():
    return sphere_volume()


@pytest.fixture(scope="module")
def sphere_mesh(sphere):
    return M.extract_mesh(sphere, level=0.5)


@pytest.fixture(scope="module")
def doe():
    return M.make_doe_mesh()


def face_normals(mesh):
    pts, faces = np.asarray(mesh.points, float), mesh.regular_faces
    tri = pts[faces]
    return tri.mean(1), np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


# ---------------------------------------------------------------------------------------------
# Extraction: analytic truth


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
    mesh, s = M.extract_mesh(sphere)  # level="auto"
    assert 0.3 < s.level < 0.7
    assert "Otsu" in s.level_rule and "Otsu" in s.format()
    assert mesh.field_data["level"][0] == pytest.approx(s.level)
    assert s.area_mm2 == pytest.approx(4 * np.pi, rel=0.03)


def test_otsu_splits_two_classes():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0.0, 0.05, 5000), rng.normal(1.0, 0.05, 1000)])
    assert 0.3 < M.otsu_level(values) < 0.7
    binary = np.zeros(1000)
    binary[:100] = 2.0
    assert M.otsu_level(binary) == pytest.approx(1.0, abs=0.01)  # middle of the empty gap


def test_fraction_and_string_levels(sphere):
    data = sphere.data * 3.0
    assert M.resolve_level(data, "fraction:0.5")[0] == pytest.approx(1.5)
    assert M.resolve_level(data, "0.75") == (0.75, "absolute")
    _, s = M.extract_mesh(Volume(data, ORIGIN, VOXEL), level="fraction:0.5")
    assert s.volume_mm3 == pytest.approx(4 / 3 * np.pi, rel=0.02)


def test_object_touching_the_grid_edge_is_closed():
    data = np.zeros((10, 12, 14), np.float32)
    data[:, :6, :] = 1.0  # a slab cut by five faces of the grid
    _, s = M.extract_mesh(Volume(data, (0.0, 0.0, 0.0), (0.1, 0.1, 0.1)), level=0.5)
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
    mesh, s = M.extract_mesh(Volume(data, (0.1, 0.2, 0.3), (0.1, 0.1, 0.1)), level=0.5)
    assert s.size_mm == pytest.approx((0.7, 0.7, 0.7), abs=1e-4)  # wraps the 8³ plateau
    assert s.watertight
    # no zero-area triangles: an STL reader (which merges points) keeps every triangle
    back = pv.read(M.write_mesh(mesh, tmp_path / "plateau.stl"))
    assert back.n_cells == s.n_triangles


# ---------------------------------------------------------------------------------------------
# Errors


def test_no_surface_raises_with_density_range(sphere):
    dim = Volume(sphere.data * 0.31, ORIGIN, VOXEL)
    msg = "no surface at level 0.5 (density range 0.00–0.31); pass --level below 0.31"
    with pytest.raises(MeshError) as err:
        M.extract_mesh(dim, level=0.5)
    assert msg in str(err.value)
    with pytest.raises(MeshError, match="pass --level above 0.00"):
        M.extract_mesh(dim, level=-1.0)
    with pytest.raises(MeshError, match="constant"):
        M.extract_mesh(Volume(np.ones((4, 4, 4), np.float32), ORIGIN, VOXEL))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"level": "fraction:2"}, "fraction between 0 and 1"),
        ({"level": "half"}, "not understood"),
        ({"smooth": "laplace"}, "smooth="),
        ({"decimate": 1.5}, "decimate="),
    ],
)
def test_invalid_options_raise(sphere, kwargs, match):
    with pytest.raises(MeshError, match=match):
        M.extract_mesh(sphere, **kwargs)


# ---------------------------------------------------------------------------------------------
# Post-processing


def test_taubin_keeps_volume(sphere, sphere_mesh):
    _, plain = sphere_mesh
    _, smooth = M.extract_mesh(sphere, level=0.5, smooth="taubin")
    assert smooth.volume_mm3 == pytest.approx(plain.volume_mm3, rel=0.005)
    assert smooth.watertight


def test_decimate_halves_triangles_and_stays_closed(sphere, sphere_mesh):
    _, plain = sphere_mesh
    mesh, s = M.extract_mesh(sphere, level=0.5, decimate=0.5)
    assert s.n_triangles == pytest.approx(plain.n_triangles / 2, rel=0.05)
    assert s.watertight and s.oriented
    assert s.volume_mm3 == pytest.approx(plain.volume_mm3, rel=0.01)


def test_largest_drops_specks(sphere):
    data = sphere.data.copy()
    data[2:4, 2:4, 2:4] = 1.0  # a speck in a corner
    vol = Volume(data, ORIGIN, VOXEL)
    _, both = M.extract_mesh(vol, level=0.5)
    _, one = M.extract_mesh(vol, level=0.5, largest=True)
    assert both.n_components == 2 and one.n_components == 1
    assert one.volume_mm3 == pytest.approx(4 / 3 * np.pi, rel=0.02)


# ---------------------------------------------------------------------------------------------
# Files and previews


def test_binary_stl_size_and_round_trip(sphere_mesh, tmp_path):
    mesh, s = sphere_mesh
    path = M.write_mesh(mesh, tmp_path / "sphere.stl")
    assert path.stat().st_size == 84 + 50 * s.n_triangles
    back = pv.read(path)
    assert back.n_cells == s.n_triangles
    b = M.summarize_mesh(back)
    assert b.watertight and b.oriented
    assert b.volume_mm3 == pytest.approx(s.volume_mm3, rel=1e-5)
    np.testing.assert_allclose(b.bounds_mm, s.bounds_mm, atol=1e-6)


@pytest.mark.parametrize("fmt", M.MESH_FORMATS)
def test_each_format_writes_and_reads_back(sphere_mesh, tmp_path, fmt):
    mesh, s = sphere_mesh
    path = M.write_mesh(mesh, tmp_path / f"out.{fmt}")
    back = pv.read(path)
    assert back.n_cells == s.n_triangles
    np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [f"out.{fmt}"]  # no temporary left


def test_format_argument_and_unknown_format(sphere_mesh, tmp_path):
    mesh, s = sphere_mesh
    path = M.write_mesh(mesh, tmp_path / "mesh.bin", format="stl")
    assert path.stat().st_size == 84 + 50 * s.n_triangles
    with pytest.raises(MeshError, match="stl, ply, obj, vtp"):
        M.write_mesh(mesh, tmp_path / "mesh.step")
    assert not (tmp_path / "mesh.step").exists()


def test_summary_format_and_dict(sphere_mesh):
    _, s = sphere_mesh
    text = s.format()
    assert "watertight   yes" in text and "mm²" in text and "mm³" in text
    d = json.loads(json.dumps(s.to_dict()))
    assert d["n_triangles"] == s.n_triangles and d["level"] == 0.5


def render_or_skip(*args, **kwargs):
    try:
        return M.render_preview(*args, **kwargs)
    except BackendUnavailableError as err:  # a machine without any OpenGL (EGL/OSMesa/X)
        pytest.skip(str(err))


def test_render_preview_writes_png(doe, tmp_path):
    plain = render_or_skip(doe, tmp_path / "doe.png", window_size=(320, 240))
    x = np.asarray(doe.points)[:, 0]
    coloured = render_or_skip(doe, tmp_path / "x.png", scalars=x, title="x (mm)",
                              window_size=(320, 240))
    for path in (plain, coloured):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doe.png", "x.png"]


# ---------------------------------------------------------------------------------------------
# Distances and comparison


def test_point_to_surface_distance_is_to_triangles_not_vertices():
    cube = pv.Cube(x_length=1.0, y_length=1.0, z_length=1.0)  # faces at ±0.5
    points = np.array([[0.0, 0.0, 1.0], [2.0, 0.1, -0.2], [1.0, 1.0, 1.0], [0.5, 0.0, 0.0]])
    expected = [0.5, 1.5, np.sqrt(3) * 0.5, 0.0]
    np.testing.assert_allclose(M.point_to_surface_distance(points, cube), expected, atol=1e-12)


def test_compare_with_itself_is_zero(sphere_mesh):
    mesh, _ = sphere_mesh
    c = M.compare_meshes(mesh, mesh, n_samples=3000)
    for stats in (c.recon_to_cad, c.cad_to_recon, c.symmetric):
        assert stats.hausdorff_um < 1e-3
    assert c.symmetric.n_samples == 6000
    np.testing.assert_array_equal(c.transform, np.eye(4))


def test_compare_offset_by_50um(sphere_mesh):
    mesh, _ = sphere_mesh
    grown = mesh.copy()
    grown.points = grown.points + 0.05 * np.asarray(mesh.point_data["Normals"])  # +50 µm
    c = M.compare_meshes(grown, mesh, n_samples=3000)
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
    c = M.compare_meshes(shifted, mesh, n_samples=3000)
    assert c.symmetric.mean_um == pytest.approx(25.0, abs=1.5)
    assert c.symmetric.hausdorff_um == pytest.approx(50.0, abs=1.5)


def test_icp_recovers_a_rigid_offset(doe):
    angle = np.radians(1.5)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1]])
    shift = np.array([0.03, -0.02, 0.01])
    moved = doe.copy()
    moved.points = np.asarray(doe.points) @ rot.T + shift
    before = M.compare_meshes(moved, doe, n_samples=2000)
    after = M.compare_meshes(moved, doe, align="icp", n_samples=2000)
    assert before.symmetric.mean_um > 10
    assert after.symmetric.hausdorff_um < 0.5
    assert after.rotation_deg == pytest.approx(1.5, abs=0.01)
    # the ICP transform undoes the offset: T (R p + t) = p
    np.testing.assert_allclose(after.transform[:3, :3] @ rot, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(after.transform[:3, :3] @ shift + after.transform[:3, 3], 0,
                               atol=1e-5)
    assert "ICP" in after.format()


def test_write_comparison(sphere_mesh, tmp_path):
    mesh, _ = sphere_mesh
    c = M.compare_meshes(mesh.translate((0.01, 0, 0), inplace=False), mesh, n_samples=1000)
    try:
        M.write_comparison(c, tmp_path / "cmp.json", tmp_path / "cmp.png", extra={"cad": "x.stl"})
    except BackendUnavailableError as err:
        pytest.skip(str(err))
    d = json.loads((tmp_path / "cmp.json").read_text())
    assert d["format"] == "recon.mesh_comparison/1" and d["cad"] == "x.stl"
    assert d["symmetric"]["hausdorff_um"] == pytest.approx(10.0, abs=0.5)
    assert set(d["recon_to_cad"]) == {"mean_um", "rms_um", "p95_um", "hausdorff_um", "n_samples"}
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_rejects_bad_align(sphere_mesh):
    mesh, _ = sphere_mesh
    with pytest.raises(MeshError, match="align"):
        M.compare_meshes(mesh, mesh, align="best")


# ---------------------------------------------------------------------------------------------
# Voxelization and the DOE reference


@pytest.mark.parametrize("supersample, rel", [(1, 0.02), (3, 0.003)])
def test_voxelize_sphere_volume(supersample, rel):
    sphere = pv.Sphere(radius=1.0, center=(0.1, -0.2, 0.3), theta_resolution=60,
                       phi_resolution=60)
    mesh_volume = M.summarize_mesh(sphere).volume_mm3
    vol = M.voxelize_mesh(sphere, (48, 50, 46), (-1.1, -1.45, -0.9), (0.05, 0.05, 0.05),
                          supersample=supersample)
    assert vol.data.dtype == np.float32 and vol.shape == (48, 50, 46)
    assert vol.data.min() == 0.0 and vol.data.max() == 1.0
    assert vol.data.sum() * 0.05**3 == pytest.approx(mesh_volume, rel=rel)
    # the inside is where it should be: centre voxel of the sphere is 1, corners 0
    k, j, i = np.round((np.array([0.3, -0.2, 0.1]) - (-0.9, -1.45, -1.1)) / 0.05).astype(int)
    assert vol.data[k, j, i] == 1.0 and vol.data[0, 0, 0] == 0.0
    assert vol.origin_mm == (-1.1, -1.45, -0.9)


def test_voxelize_rejects_open_mesh():
    sphere = pv.Sphere()
    open_sphere = sphere.extract_cells(np.arange(10, sphere.n_cells)).extract_surface(algorithm=None)
    with pytest.raises(MeshError, match="not watertight"):
        M.voxelize_mesh(open_sphere, (8, 8, 8), (0, 0, 0), (0.1, 0.1, 0.1))


def test_doe_stl_is_watertight_and_fits_its_box(doe):
    stl = pv.read(DOE_STL)
    s = M.summarize_mesh(stl)
    assert s.watertight and s.oriented and s.volume_mm3 > 0
    assert s.n_components == 3
    assert DOE_STL.stat().st_size == 84 + 50 * s.n_triangles < 1_000_000
    lo, hi = np.array(s.bounds_mm)
    box = np.array(M.DOE_BOX_MM)
    assert np.all(hi <= box + 1e-6) and np.all(lo >= -box - 1e-6)
    np.testing.assert_allclose(hi, [1.15, 0.8, 0.2], atol=1e-6)
    np.testing.assert_allclose(lo, [-1.15, -0.8, -0.2], atol=1e-6)
    # the file is what make_doe_mesh() makes
    made = M.summarize_mesh(doe)
    assert made.n_triangles == s.n_triangles
    assert made.volume_mm3 == pytest.approx(s.volume_mm3, rel=1e-6)
    assert made.area_mm2 == pytest.approx(s.area_mm2, rel=1e-6)


def test_doe_phantom_round_trip(doe):
    """voxelize → extract gives back the CAD surface to a fraction of a voxel."""
    vol = M.voxelize_mesh(doe, (26, 84, 122), (-1.21, -0.83, -0.25), (0.02, 0.02, 0.02),
                          supersample=3)
    mesh, s = M.extract_mesh(vol, level=0.5)
    assert s.watertight and s.n_components == 3
    c = M.compare_meshes(mesh, doe, n_samples=2000)
    assert c.symmetric.mean_um < 3.0  # voxel 20 µm
    assert c.symmetric.hausdorff_um < 20.0


# ---------------------------------------------------------------------------------------------
# Import hygiene


def test_import_does_not_load_pyvista():
    code = (
        "import sys, recon.mesh; "
        "bad = [m for m in ('pyvista', 'vtk', 'vtkmodules') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_all_names_resolve():
    for name in M.__all__:
        assert hasattr(M, name), name
