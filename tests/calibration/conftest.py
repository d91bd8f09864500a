"""A small mirror dome (direct view + 4 mirrors) and a perturbed copy, for fast calibration tests."""

import pytest
import torch

from calibration.perturb import perturb_system
from optics.design import DomeDesign, design_dome
from optics.system import save_system


def small_dome():
    """The default dome's lens, sensor and window with one ring of 4 mirrors at 30°."""
    return design_dome(DomeDesign(rings=((30.0, 4, 0.0),)))


@pytest.fixture(scope="session")
def dome_files(tmp_path_factory):
    """(nominal path, perturbed path, nominal System, perturbed System); 0.5° / 50 µm σ."""
    d = tmp_path_factory.mktemp("dome")
    nominal = small_dome()
    perturbed = perturb_system(nominal, tilt_deg=0.5, shift_um=50.0, seed=7)
    save_system(nominal, d / "nominal.toml")
    save_system(perturbed, d / "perturbed.toml")
    return d / "nominal.toml", d / "perturbed.toml", nominal, perturbed


@pytest.fixture(scope="session")
def target_set(tmp_path_factory, dome_files):
    """A simulated target set: 8 known positions through the perturbed dome (5e7 photons each)."""
    from recon.simulation.target import simulate_calibration_target

    nominal_path, perturbed_path, _, _ = dome_files
    out = tmp_path_factory.mktemp("targets") / "cal"
    simulate_calibration_target(
        nominal_path, out, points=8, true_system_path=perturbed_path, seed=5, photons=5e7
    )
    return out


def as_f64(system):
    return system.to(torch.float64)
