"""`recon mesh` as a function: which density, the mesh and preview in mm, refusals, the CAD comparison."""

import json

import numpy as np
import pytest

from recon.errors import ConfigError, MeshError
from recon.io.volume import write_volume
from recon.jobs.mesh import density_path, mesh
from tests.recon.meshes import CENTRE, RADIUS, VOXEL, sphere_volume

pv = pytest.importorskip("pyvista")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sphere_tif(tmp_path_factory):
    """A fit output directory holding the sphere of tests/recon/meshes.py as density.tif."""
    fit = tmp_path_factory.mktemp("fit")
    write_volume(fit / "density.tif", sphere_volume())
    return fit / "density.tif"


@pytest.fixture(scope="module")
def meshed(sphere_tif, tmp_path_factory):
    out = tmp_path_factory.mktemp("mesh") / "sphere.stl"
    return out, mesh(sphere_tif, out, level=0.5)


def test_density_path_of_a_fit_directory_a_file_and_nothing(sphere_tif, tmp_path):
    assert density_path(sphere_tif.parent) == sphere_tif
    assert density_path(sphere_tif) == sphere_tif
    other = tmp_path / "volume.tiff"
    other.write_bytes(b"not checked here")
    assert density_path(other) == other  # a file is taken as it is
    with pytest.raises(ConfigError, match="holds no density.tif; pass a fit output directory"):
        density_path(tmp_path)
    with pytest.raises(ConfigError, match="missing does not exist; pass a fit output directory"):
        density_path(tmp_path / "missing")


def test_mesh_writes_the_surface_and_its_preview(meshed):
    out, outcome = meshed
    assert outcome.written == (out, out.with_suffix(".png")) and outcome.comparison is None
    assert out.with_suffix(".png").read_bytes()[:8] == PNG_SIGNATURE
    summary = outcome.summary
    assert out.stat().st_size == 84 + 50 * summary.n_triangles  # binary STL
    assert summary.watertight and summary.n_components == 1 and summary.level == 0.5
    assert summary.area_mm2 == pytest.approx(4 * np.pi * RADIUS**2, rel=0.02)
    assert summary.volume_mm3 == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.03)
    assert sorted(p.name for p in out.parent.iterdir()) == ["sphere.png", "sphere.stl"]  # no temporaries


def test_the_file_is_in_world_millimetres(meshed):
    out, outcome = meshed
    surface = pv.read(str(out))
    assert surface.n_cells == outcome.summary.n_triangles
    lo, hi = np.array(surface.bounds).reshape(3, 2).T
    np.testing.assert_allclose(lo, np.array(CENTRE) - RADIUS, atol=max(VOXEL))
    np.testing.assert_allclose(hi, np.array(CENTRE) + RADIUS, atol=max(VOXEL))
    np.testing.assert_allclose(outcome.summary.bounds_mm, (lo, hi), atol=1e-5)


def test_an_existing_out_is_refused_without_overwrite(sphere_tif, tmp_path):
    out = tmp_path / "m.stl"
    out.write_text("keep me")
    with pytest.raises(ConfigError, match="m.stl exists; pass --overwrite to replace it"):
        mesh(sphere_tif, out)
    assert out.read_text() == "keep me" and not out.with_suffix(".png").exists()


@pytest.mark.parametrize("cad", ["missing.stl", "empty.stl"])
def test_a_missing_or_empty_cad_file_is_refused_before_writing(sphere_tif, tmp_path, cad):
    (tmp_path / "empty.stl").write_bytes(b"")
    out = tmp_path / "out" / "m.stl"
    error, message = ((ConfigError, "CAD mesh .*missing.stl does not exist") if cad == "missing.stl"
                      else (MeshError, "CAD mesh .*empty.stl holds no surface"))
    with pytest.raises(error, match=message):
        mesh(sphere_tif, out, compare=tmp_path / cad)
    assert not (tmp_path / "out").exists()


def test_a_missing_source_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        mesh(tmp_path / "nope", tmp_path / "m.stl")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_an_existing_out(sphere_tif, tmp_path):
    out = tmp_path / "m.ply"
    out.write_text("old")
    outcome = mesh(sphere_tif.parent, out, level="fraction:0.5", overwrite=True)
    assert pv.read(str(out)).n_cells == outcome.summary.n_triangles > 0
    assert outcome.summary.level == pytest.approx(0.5)  # the sphere's maximum is 1


def test_compare_writes_the_comparison_files(sphere_tif, meshed, tmp_path):
    cad, _ = meshed
    out = tmp_path / "again.stl"
    outcome = mesh(sphere_tif.parent, out, level=0.5, compare=cad)
    json_path, png_path = tmp_path / "again_compare.json", tmp_path / "again_compare.png"
    assert outcome.written == (out, out.with_suffix(".png"), json_path, png_path)
    assert png_path.read_bytes()[:8] == PNG_SIGNATURE
    assert outcome.comparison.symmetric.hausdorff_um < 1e-3  # the same surface
    report = json.loads(json_path.read_text())
    assert report["cad"] == str(cad) and report["mesh"] == outcome.summary.to_dict()
    assert report["align"] == "none" and report["symmetric"]["hausdorff_um"] < 1e-3


def test_an_unknown_align_is_refused_before_writing(sphere_tif, meshed, tmp_path):
    cad, _ = meshed
    out = tmp_path / "m.stl"
    with pytest.raises(ConfigError, match="align"):
        mesh(sphere_tif, out, level=0.5, compare=cad, align="rigid")
    assert list(tmp_path.iterdir()) == []
