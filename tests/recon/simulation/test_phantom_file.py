"""Phantom files and names: examples load, definitions round-trip, bad files and names are refused."""

import math
from pathlib import Path

import pytest
import tomli_w
import torch

from recon.errors import ConfigError
from recon.simulation.named import fringes
from recon.simulation.phantom_file import load_phantom
from tests.recon.simulation.integrals import phantom_integral

DATA = Path(__file__).resolve().parents[3] / "data" / "phantoms"


def test_example_files_load_and_integrate():
    for path in sorted(DATA.glob("*.toml")):
        ph = load_phantom(path, atoms=5e5)
        total, _ = phantom_integral(ph, voxel=0.01 if "fringes" in path.name else 0.03)
        assert abs(total / 5e5 - 1) < 0.01, path.name
    two = load_phantom(DATA / "two_clouds.toml", atoms=3.0)
    assert two.name == "two_clouds" and two.component_atoms == pytest.approx((1.0, 2.0))


def test_definition_round_trips_through_a_file(tmp_path):
    for ph in (fringes(1e5, sigma_mm=(0.3, 0.2, 0.4), phase_rad=0.4, direction=(0, 1, 1)),
               load_phantom("donut", atoms=1e5), load_phantom(DATA / "shapes_with_fringes.toml", atoms=1e5)):
        path = tmp_path / f"{ph.name}.toml"
        path.write_text(tomli_w.dumps(ph.definition))
        again = load_phantom(path, atoms=1e5)
        pts = torch.rand(100, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
        # the direction is renormalised on reading: last-bit differences, amplified near dark fringes
        assert torch.allclose(ph.density(pts), again.density(pts), rtol=1e-9, atol=1e-12)


def test_amplitude_sets_relative_peak_density(tmp_path):
    path = tmp_path / "amp.toml"
    path.write_text("[[sphere]]\ncenter_mm = [-0.5, 0, 0]\nradius_mm = 0.2\namplitude = 1.0\n"
                    "[[box]]\nmin_mm = [0.2, -0.1, -0.1]\nmax_mm = [0.4, 0.1, 0.1]\namplitude = 3.0\n")
    ph = load_phantom(path, atoms=1.0)
    pts = torch.tensor([[-0.5, 0.0, 0.0], [0.3, 0.0, 0.0]], dtype=torch.float64)
    d = ph.density(pts)
    assert abs(d[1] / d[0] - 3.0) < 1e-9


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("colour = 1\n[[gaussian]]\n", "unknown key 'colour'"),
        ("[[gaussian]]\ncentre_mm = [0, 0, 0]\n",
         "unknown key 'gaussian[0].centre_mm' (did you mean 'center_mm'?)"),
        ("[[sphere]]\ncenter_mm = [0, 0, 0]\n", "'sphere[0].radius_mm' is missing"),
        ("[[sphere]]\nradius_mm = -1.0\n", "'sphere[0].radius_mm' must be > 0"),
        ("[[gaussian]]\nsigma_mm = 'wide'\n", "'gaussian[0].sigma_mm' must be a number or a list of 3"),
        ("[[gaussian]]\ncenter_mm = [0, 0]\n", "'gaussian[0].center_mm' must be a list of 3 numbers"),
        ("[[gaussian]]\ncovariance_mm2 = [[1, 0, 0], [0, -1, 0], [0, 0, 1]]\n", "not positive definite"),
        ("[[gaussian]]\ncovariance_mm2 = [[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]\n", "must be symmetric"),
        ("[[box]]\nmin_mm = [0, 0, 0]\nmax_mm = [1, -1, 1]\n", "must exceed min_mm"),
        ("[[gaussian]]\nweight = 1.0\n[[sphere]]\nradius_mm = 1.0\namplitude = 1.0\n", "use one kind"),
        ("[[gaussian]]\nweight = 0.0\n", "every weight is 0"),
        ("name = 'x'\n", "no primitives"),
        ("[gaussian]\nsigma_mm = 1.0\n", "must be an array of tables"),
        ("[[gaussian]]\n[fringes]\nperiod = 0.2\n",
         "unknown key 'fringes.period' (did you mean 'period_mm'?)"),
        ("[[gaussian]]\n[fringes]\nphase_rad = 0.2\n", "'fringes.period_mm' is missing"),
        ("[[gaussian]]\n[fringes]\nperiod_mm = 0.2\naxis = 'w'\n", "'fringes.axis' must be 'x', 'y' or 'z'"),
        ("[[donut]]\npower = 1.5\n", "'donut[0].power' must be an integer"),
        ("[[gaussian]]\nmodel = 'opaque'\n", "unknown key 'gaussian[0].model'"),
        ('[[gaussian]]\n"\\n" = 0\n', "unknown key 'gaussian[0].\\n'"),  # one line still
        ("model = 'opaque'\n[[gaussian]]\n", "key 'model' must be one of"),
        ("[[gaussian]\n", "not valid TOML"),
    ],
)
def test_bad_phantom_files(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_phantom(path, atoms=1.0)
    message = str(err.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_bad_names_and_arguments(tmp_path):
    with pytest.raises(ConfigError, match="unknown phantom 'banana'"):
        load_phantom("banana", atoms=1.0)
    with pytest.raises(ConfigError, match="does not exist"):
        load_phantom(tmp_path / "missing.toml", atoms=1.0)
    for atoms in (-1.0, 0.0, math.nan, True):
        with pytest.raises(ConfigError, match="atoms must be a positive number"):
            load_phantom("gaussian", atoms=atoms)
    with pytest.raises(ConfigError, match=r"unknown key 'sigma' \(did you mean 'sigma_mm'\?\)"):
        load_phantom("gaussian", atoms=1.0, options={"sigma": 0.3})
    with pytest.raises(ConfigError, match="invalid options"):
        load_phantom("sphere", atoms=1.0, options={"radius_mm": -1.0})
