"""Shared test markers and tolerances."""

import pytest
import torch

from optics.system import save_system
from tests.optics.helpers import make_system


def _tcnn_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import tinycudann  # noqa: F401
    except (ImportError, OSError) as err:  # tcnn raises EnvironmentError
        return f"tinycudann not importable: {err}"
    return None


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
_TCNN_REASON = _tcnn_reason()
requires_tcnn = pytest.mark.skipif(_TCNN_REASON is not None, reason=f"needs tinycudann: {_TCNN_REASON}")
slow = pytest.mark.slow

# Tolerances keyed by dtype: (rtol, atol).
TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-10, 1e-12)}


@pytest.fixture(autouse=True)
def _own_pool_cache(tmp_path_factory, monkeypatch):
    """Every test's `recon fit` uses a pool cache of its own (beside its tmp_path), never the user's."""
    monkeypatch.setenv("RECON_POOL_CACHE", str(tmp_path_factory.mktemp("pool-cache")))


@pytest.fixture(scope="session")
def tiny_system_file(tmp_path_factory):
    """A one-camera, one-mirror instrument with a small box: fast to simulate and fit."""
    mirror = {
        "name": "m1",
        "center_mm": [0.0, 12.0, 12.0],
        "normal": [0.0, -0.3, -0.95],
        "shape": "circle",
        "radius_mm": 4.0,
        "reflectivity": 0.95,
    }
    system = make_system(mirrors=[mirror], dtype=torch.float64)
    path = tmp_path_factory.mktemp("sys") / "tiny.toml"
    save_system(system, path)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_system_file):
    from recon.simulation.simulate import simulate_run

    out = tmp_path_factory.mktemp("runs") / "tiny"
    simulate_run(
        tiny_system_file,
        "gaussian",
        out,
        atoms=2e5,
        photons_per_atom=200.0,
        samples=2,
        step_mm=0.04,
        truth_voxel_mm=0.1,
        seed=3,
    )
    return out


# Light factors of the three cameras of `three_camera_run`: what a fit must find (camera 0 is its
# reference).
THREE_CAMERA_SENSITIVITY = (1.0, 0.5, 2.0)


@pytest.fixture(scope="session")
def three_camera_system_file(tmp_path_factory):
    """Three separate cameras (along -z, +x and -y) looking at a small box, no mirrors."""
    from tests.optics.helpers import system_dict

    d = system_dict()
    cam = d["cameras"][0]
    d["cameras"] = [
        {**cam, "name": "south"},
        {**cam, "name": "east", "pose": {"position_mm": [351.926, 0.0, 0.0], "look_at_mm": [0.0, 0.0, 0.0],
                                         "up": [0.0, 0.0, 1.0]}},
        {**cam, "name": "north", "pose": {"position_mm": [0.0, -351.926, 0.0], "look_at_mm": [0.0, 0.0, 0.0],
                                          "up": [0.0, 0.0, 1.0]}},
    ]
    from optics.system import system_from_dict

    path = tmp_path_factory.mktemp("sys") / "three.toml"
    save_system(system_from_dict(d, dtype=torch.float64), path)
    return path


@pytest.fixture(scope="session")
def three_camera_run(tmp_path_factory, three_camera_system_file):
    """A Gaussian cloud seen by the three cameras, whose sensitivities are THREE_CAMERA_SENSITIVITY."""
    from recon.simulation.simulate import simulate_run

    out = tmp_path_factory.mktemp("runs") / "three"
    simulate_run(three_camera_system_file, "gaussian", out, atoms=2e5, photons_per_atom=200.0, samples=2,
                 step_mm=0.04, truth_voxel_mm=0.1, seed=5, camera_sensitivity=THREE_CAMERA_SENSITIVITY)
    return out
