"""The DOE reference object: watertight and inside its box."""

from pathlib import Path

import numpy as np
import pytest

from recon.analysis.mesh import summarize_mesh  # noqa: E402
from recon.simulation.doe import DOE_BOX_MM  # noqa: E402

pv = pytest.importorskip("pyvista")


DOE_STL = Path(__file__).resolve().parents[3] / "data" / "meshes" / "doe.stl"


def test_doe_stl_is_watertight_and_fits_its_box(doe):
    stl = pv.read(DOE_STL)
    s = summarize_mesh(stl)
    assert s.watertight and s.oriented and s.volume_mm3 > 0
    assert s.n_components == 3
    assert DOE_STL.stat().st_size == 84 + 50 * s.n_triangles < 1_000_000
    lo, hi = np.array(s.bounds_mm)
    box = np.array(DOE_BOX_MM)
    assert np.all(hi <= box + 1e-6) and np.all(lo >= -box - 1e-6)
    np.testing.assert_allclose(hi, [1.15, 0.8, 0.2], atol=1e-6)
    np.testing.assert_allclose(lo, [-1.15, -0.8, -0.2], atol=1e-6)
    # the file is what make_doe_mesh() makes
    made = summarize_mesh(doe)
    assert made.n_triangles == s.n_triangles
    assert made.volume_mm3 == pytest.approx(s.volume_mm3, rel=1e-6)
    assert made.area_mm2 == pytest.approx(s.area_mm2, rel=1e-6)
