"""The turntable: where an off-centre blob appears at each angle, and its frames' common extent."""

import math

import numpy as np
import pytest

from recon.analysis.turntable import turntable
from recon.io.volume import Volume


def _blob(centre=(0.4, 0.0, 0.3), n=40, voxel=0.05, sigma=0.08):
    coords = (np.arange(n) - (n - 1) / 2) * voxel
    z, y, x = np.meshgrid(coords, coords, coords, indexing="ij")
    data = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / (2 * sigma**2))
    origin = (float(coords[0]),) * 3
    return Volume(data.astype(np.float32), origin, (voxel,) * 3)


def _peak_mm(frame):
    rows, cols = frame.image.shape
    r, c = np.unravel_index(int(np.argmax(frame.image)), frame.image.shape)
    left, right, bottom, top = frame.extent_mm
    return left + (c + 0.5) * (right - left) / cols, top - (r + 0.5) * (top - bottom) / rows


@pytest.mark.parametrize("frames", [4, 8])
def test_an_off_centre_blob_turns_with_the_view_and_stays_at_its_height(frames):
    shots = turntable(_blob(), frames=frames)
    assert [f.angle_deg for f in shots] == [360 * k / frames for k in range(frames)]
    assert len({f.image.shape for f in shots}) == 1 and len({f.extent_mm for f in shots}) == 1
    for f in shots:
        across, up = _peak_mm(f)
        assert across == pytest.approx(0.4 * math.cos(math.radians(f.angle_deg)), abs=0.05)
        assert up == pytest.approx(0.3, abs=0.05)  # the top row is +z
        assert 0.8 < float(f.image.max()) <= 1.0  # the blob's peak, sampled every voxel (σ = 1.6 voxels)


def test_other_axes_and_bad_settings():
    across, up = _peak_mm(turntable(_blob(), frames=1, axis="x")[0])
    assert up == pytest.approx(0.4, abs=0.05)  # the axis is up: the blob's x
    with pytest.raises(ValueError, match="frames"):
        turntable(_blob(), frames=0)
    with pytest.raises(ValueError, match="axis"):
        turntable(_blob(), axis="w")


@pytest.mark.parametrize("frames", [3])
def test_an_emission_frame_holds_the_volumes_integral_and_its_column_density(frames):
    """Every frame's column densities sum (× pixel area) to the volume's integral; through the
    centre of a Gaussian of peak 1 the column is √(2π) σ."""
    blob = _blob(centre=(0.0, 0.0, 0.0), sigma=0.2)
    total = float(blob.data.sum()) * 0.05**3
    for shot in turntable(blob, frames=frames, mode="emission"):
        assert float(shot.image.sum()) * 0.05**2 == pytest.approx(total, rel=0.01)
        assert float(shot.image.max()) == pytest.approx(math.sqrt(2 * math.pi) * 0.2, rel=0.02)
    with pytest.raises(ValueError, match="mode"):
        turntable(blob, frames=1, mode="sum")
