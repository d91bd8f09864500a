"""Spheres and the DOE mesh shared by the mesh tests."""

import numpy as np
import pytest

from recon.io.volume import Volume  # noqa: E402

pv = pytest.importorskip("pyvista")


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
