"""Voxelised meshes: a sphere's volume, open meshes refused, the DOE phantom round trip."""

import numpy as np
import pytest

from recon.analysis.mesh import extract_mesh, summarize_mesh  # noqa: E402
from recon.analysis.mesh_compare import compare_meshes  # noqa: E402
from recon.errors import MeshError  # noqa: E402
from recon.simulation.voxelize import voxelize_mesh  # noqa: E402

pv = pytest.importorskip("pyvista")


@pytest.mark.parametrize("supersample, rel", [(1, 0.02), (3, 0.003)])
def test_voxelize_sphere_volume(supersample, rel):
    sphere = pv.Sphere(radius=1.0, center=(0.1, -0.2, 0.3), theta_resolution=60,
                       phi_resolution=60)
    mesh_volume = summarize_mesh(sphere).volume_mm3
    vol = voxelize_mesh(sphere, (48, 50, 46), (-1.1, -1.45, -0.9), (0.05, 0.05, 0.05),
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
        voxelize_mesh(open_sphere, (8, 8, 8), (0, 0, 0), (0.1, 0.1, 0.1))


def test_doe_phantom_round_trip(doe):
    """voxelize → extract gives back the CAD surface to a fraction of a voxel."""
    vol = voxelize_mesh(doe, (26, 84, 122), (-1.21, -0.83, -0.25), (0.02, 0.02, 0.02),
                          supersample=3)
    mesh, s = extract_mesh(vol, level=0.5)
    assert s.watertight and s.n_components == 3
    c = compare_meshes(mesh, doe, n_samples=2000)
    assert c.symmetric.mean_um < 3.0  # voxel 20 µm
    assert c.symmetric.hausdorff_um < 20.0
