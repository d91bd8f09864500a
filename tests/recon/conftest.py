"""Fixtures of the tests below tests/recon: sphere and DOE meshes, FSC half maps, a run with spots."""

import numpy as np
import pytest

from recon.analysis.mesh import extract_mesh
from recon.io.run import load_run
from recon.io.runspec import RunSpec, ViewSpec
from recon.io.runwriter import write_run
from recon.simulation.doe import make_doe_mesh
from tests.recon.analysis.fsc_maps import make_halves
from tests.recon.analysis.spots import SENSOR, gaussian_spot
from tests.recon.meshes import sphere_volume


@pytest.fixture(scope="module")
def sphere():
    return sphere_volume()


@pytest.fixture(scope="module")
def sphere_mesh(sphere):
    return extract_mesh(sphere, level=0.5)


@pytest.fixture(scope="module")
def doe():
    return make_doe_mesh()


@pytest.fixture(scope="module")
def halves():
    return make_halves(np.random.default_rng(1))


@pytest.fixture
def run(tmp_path):
    """Noise-free float frames: background 5 e⁻ plus a spot of 2000 e⁻; one saturated pixel in 'b'."""
    a = 100.0 + 5.0 + gaussian_spot(32, 32, 2000.0)
    b = 100.0 + 5.0 + gaussian_spot(24, 40, 500.0)
    b[3, 3] = 4095.0
    spec = RunSpec("s.toml", (ViewSpec("a", 0, (0, 0, 32, 32)), ViewSpec("b", 0, (60, 10, 40, 24))))
    frames = {"a": np.stack([a, a]).astype(np.float32), "b": np.stack([b, b]).astype(np.float32)}
    return load_run(write_run(tmp_path / "run", spec, frames=frames), SENSOR)
