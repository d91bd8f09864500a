"""Named phantoms: exact atom numbers, fringe periods, seeds, gradients, volume phantoms."""

import json
import math

import numpy as np
import pytest
import torch

from recon.errors import ConfigError
from recon.io.volume import Volume
from recon.simulation.named import PHANTOMS, fringes, interferometer
from recon.simulation.phantom_file import load_phantom
from recon.simulation.phantoms import PrimitivePhantom, VolumePhantom
from recon.simulation.primitives import Fringes, Gaussian, Sphere
from recon.simulation.truth import truth_volume
from tests.recon.simulation.integrals import phantom_integral

ANALYTIC = [n for n in PHANTOMS if n != "doe"]


@pytest.mark.parametrize("name", ANALYTIC)
def test_registry_phantoms_integrate_to_the_atom_number(name):
    ph = load_phantom(name, atoms=1e6)
    total, v = phantom_integral(ph)  # the bounds hint holds (nearly) all the atoms
    assert abs(total / 1e6 - 1) < 0.01
    assert v.unit == "atoms/mm^3" and ph.total_atoms == ph.atoms == 1e6
    json.dumps(ph.to_dict())  # parameters are JSON-serialisable


@pytest.mark.parametrize("phase", [0.0, 0.7, math.pi / 2])
def test_fringe_normalisation_is_exact_for_a_narrow_envelope(phase):
    # σ = 0.05 mm against a 0.2 mm period: e^{−2k²σ²} = 0.29, so the phase changes the total.
    ph = fringes(1000.0, sigma_mm=0.05, phase_rad=phase)
    total, _ = phantom_integral(ph, voxel=0.005)
    assert abs(total / 1000.0 - 1) < 2e-3
    k, s = math.pi / 0.2, 0.05
    expected_norm = 0.5 * (1 - math.exp(-2 * k * k * s * s) * math.cos(2 * phase))
    g = Gaussian.isotropic((0, 0, 0), s)
    y = torch.tensor([[0.0, 0.013, 0.0]], dtype=torch.float64)
    ratio = ph.density(y) / (1000.0 * g.density(y) * math.sin(k * 0.013 - phase) ** 2)
    assert abs(ratio.item() * expected_norm - 1) < 1e-12


@pytest.mark.parametrize("chirp", [0.0, 6.0, -25.0])
def test_chirped_fringes_mean_under_a_gaussian_is_the_quadrature_along_the_wave_vector(chirp):
    """The closed form of ``E[sin²(k s + ½ κ s² − φ)]`` against a quadrature over s ~ N(m, v)."""
    cov = np.array([[0.09, 0.02, -0.01], [0.02, 0.06, 0.015], [-0.01, 0.015, 0.04]])
    g = Gaussian(np.array([0.1, -0.05, 0.2]), cov)
    fr = Fringes(np.array([0.3, 0.9, 0.2]), period_mm=0.15, phase_rad=0.4,
                 origin_mm=np.array([0.02, 0.0, -0.1]), chirp_per_mm2=chirp)
    m = float(fr.direction @ (g.center_mm - fr.origin_mm))
    v = float(fr.direction @ cov @ fr.direction)
    s = np.linspace(m - 12 * math.sqrt(v), m + 12 * math.sqrt(v), 400001)
    weight = np.exp(-0.5 * (s - m) ** 2 / v)
    modulation = np.sin((fr.k + 0.5 * chirp * s) * s - fr.phase_rad) ** 2
    expected = float((weight * modulation).sum() / weight.sum())
    assert fr.mean_under(g) == pytest.approx(expected, abs=1e-9)
    assert 0.05 < expected < 0.95


def test_chirped_fringes_are_dark_where_the_phase_is_a_multiple_of_pi_and_hold_the_atoms():
    chirp, period, phase = 12.0, 0.2, 0.3
    ph = fringes(1000.0, sigma_mm=0.3, period_mm=period, phase_rad=phase, chirp_per_mm2=chirp)
    k = math.pi / period
    total, _ = phantom_integral(ph, voxel=0.01)
    assert abs(total / 1000.0 - 1) < 5e-3
    for m in (-3, -1, 0, 2, 4):  # dark fringes: k s + ½ κ s² − φ = mπ, s along y from the centre
        s = (-k + math.sqrt(k * k + 2 * chirp * (m * math.pi + phase))) / chirp
        dark = ph.density(torch.tensor([0.0, s, 0.0], dtype=torch.float64))
        bright = ph.density(torch.tensor([0.0, s + 0.25 * period, 0.0], dtype=torch.float64))
        assert float(dark) < 1e-20 < float(bright)
    # the local period shrinks along +y (κ > 0): the spacing of the dark fringes
    darks = [(-k + math.sqrt(k * k + 2 * chirp * (m * math.pi + phase))) / chirp for m in (-2, -1, 1, 2)]
    assert darks[1] - darks[0] > period > darks[3] - darks[2]
    assert ph.params["chirp_per_mm2"] == chirp and "chirp_per_mm2" not in fringes(1.0).params


def test_a_chirp_in_a_phantom_file_round_trips_and_needs_gaussians(tmp_path):
    path = tmp_path / "chirp.toml"
    path.write_text('[[gaussian]]\nsigma_mm = 0.3\n[fringes]\nperiod_mm = 0.2\nchirp_per_mm2 = 5.0\n')
    ph = load_phantom(path, atoms=1e5)
    assert ph.fringes.chirp_per_mm2 == 5.0 and ph.definition["fringes"]["chirp_per_mm2"] == 5.0
    path.write_text('[[sphere]]\nradius_mm = 0.3\n[fringes]\nperiod_mm = 0.2\nchirp_per_mm2 = 5.0\n')
    with pytest.raises(ConfigError, match="chirp needs Gaussian components"):
        load_phantom(path, atoms=1e5)
    with pytest.raises(ConfigError, match="chirp needs Gaussian"):
        PrimitivePhantom("s", [(1.0, Sphere(np.zeros(3), 0.3))], atoms=1.0,
                         fringes=Fringes(np.array([0.0, 1.0, 0.0]), chirp_per_mm2=1.0))


def test_fringe_period_from_fft():
    for direction, axis in (((0.0, 1.0, 0.0), 1), ((1.0, 0.0, 0.0), 0)):
        ph = fringes(1.0, direction=direction)
        t = torch.linspace(-1.5, 1.5, 3001, dtype=torch.float64)
        pts = torch.zeros(3001, 3, dtype=torch.float64)
        pts[:, axis] = t
        line = ph.density(pts).numpy()
        spec = np.abs(np.fft.rfft(line - line.mean()))
        freq = np.fft.rfftfreq(len(t), d=3.0 / 3000)
        band = freq > 2.0  # above the envelope's own spectrum (σ = 0.5 mm)
        peak = freq[band][np.argmax(spec[band])]
        assert abs(1 / peak - 0.2) < 0.005  # 200 µm between density maxima
    # φ = 0: a dark fringe through the centre, a bright one a half period away along +y.
    ph = fringes(1.0, center_mm=(0.1, 0.2, 0.3))
    dark = ph.density(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    bright = ph.density(torch.tensor([0.1, 0.3, 0.3], dtype=torch.float64))
    assert dark.item() < 1e-12 and bright.item() > 0


def test_centre_is_configurable():
    c = np.array([0.2, -0.1, 0.3])
    for name in ("gaussian", "fringes", "donut", "sphere"):
        ph = load_phantom(name, atoms=1.0, options={"center_mm": tuple(c)})
        _, v = phantom_integral(ph, voxel=0.04)
        pts = v.points(torch.float64).numpy()
        w = v.data.astype(np.float64)[..., None]
        centroid = (pts * w).sum((0, 1, 2)) / w.sum()
        assert np.allclose(centroid, c, atol=5e-3), name


def test_spike_fits_the_reconstruction_box():
    ph = load_phantom("spike", atoms=1e6)
    v = truth_volume(ph, (-1.2, -1.2, -1.2), (1.2, 1.2, 1.2), 0.04)
    assert v.meta["atoms_in_grid"] > 0.97e6
    assert ph.component_atoms == pytest.approx((0.7e6, 0.3e6))


def test_clouds_follow_the_seed():
    a = load_phantom("clouds", atoms=1.0, seed=1)
    b = load_phantom("clouds", atoms=1.0, seed=1)
    c = load_phantom("clouds", atoms=1.0, seed=2)
    assert a.params == b.params and a.params != c.params
    centres = np.array([cl["center_mm"] for cl in a.params["clouds"]])
    assert len(centres) == 3 and min(np.linalg.norm(centres[0] - centres[1:], axis=1)) >= 0.5


@pytest.mark.parametrize("name", ["gaussian", "fringes", "donut", "sphere", "box"])
def test_density_is_differentiable(name):
    ph = load_phantom(name, atoms=10.0)
    pts = (torch.rand(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 0.5)
    pts.requires_grad_(True)
    assert torch.autograd.gradcheck(ph.density, (pts,))


@pytest.mark.parametrize("shape", [(), (1,), (2, 3)])
def test_batch_shapes(shape):
    pts = torch.zeros(*shape, 3)
    for name in ANALYTIC:
        out = load_phantom(name, atoms=1.0).density(pts)
        assert out.shape == shape and out.dtype == torch.float32


def test_volume_phantom_reproduces_the_volume_at_voxel_centres():
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 2, (5, 6, 7)).astype(np.float32)
    vol = Volume(data, (-0.3, 0.1, 0.2), (0.1, 0.05, 0.2), "atoms/mm^3")
    ph = VolumePhantom(vol)
    centres = vol.points(torch.float64)
    assert torch.allclose(ph.density(centres), torch.from_numpy(data).double(), atol=1e-6)
    assert ph.total_atoms == pytest.approx(float(data.astype(np.float64).sum()) * 0.1 * 0.05 * 0.2)
    far = torch.tensor([[5.0, 5.0, 5.0], [-0.3 - 0.1, 0.1, 0.2]], dtype=torch.float64)
    assert torch.equal(ph.density(far), torch.zeros(2, dtype=torch.float64))
    # midway between two centres along x: the mean of the two values
    mid = centres[2, 3, 1] + torch.tensor([0.05, 0.0, 0.0], dtype=torch.float64)
    assert abs(ph.density(mid).item() - (data[2, 3, 1] + data[2, 3, 2]) / 2) < 1e-6
    # rescaled to an atom number; truth_volume on its own grid gives the volume back
    scaled = VolumePhantom(vol, atoms=10.0)
    assert scaled.total_atoms == pytest.approx(10.0)
    cube = Volume(data, (-0.3, 0.1, 0.2), (0.1, 0.1, 0.1))
    lo = np.array(cube.origin_mm) - 0.05
    back = truth_volume(VolumePhantom(cube), lo, lo + np.array([0.7, 0.6, 0.5]), 0.1, supersample=1)
    assert np.allclose(back.data, data, atol=1e-6)
    pts = (centres[1:3, 1:3, 1:3].reshape(-1, 3) + 0.013).requires_grad_(True)
    assert torch.autograd.gradcheck(ph.density, (pts,))


def test_volume_phantom_rejects_bad_volumes():
    with pytest.raises(ConfigError, match="no mass"):
        VolumePhantom(Volume(np.zeros((2, 2, 2), np.float32), (0, 0, 0), (1, 1, 1)), atoms=1.0)
    with pytest.raises(ConfigError, match="finite values ≥ 0"):
        VolumePhantom(Volume(-np.ones((2, 2, 2), np.float32), (0, 0, 0), (1, 1, 1)))


def test_doe_phantom_is_opaque_and_relative():
    pytest.importorskip("pyvista")
    ph = load_phantom("doe", atoms=1.0)
    assert ph.model == "emission-absorption" and ph.total_atoms == pytest.approx(20 * 0.870, rel=0.02)
    v = truth_volume(ph, (-1.2, -1.2, -1.2), (1.2, 1.2, 1.2), 0.05)
    assert v.unit == "relative" and 19.0 < float(v.data.max()) <= 20.0 + 1e-4


def test_the_interferometer_cloud_holds_its_atoms_and_its_clumps():
    ph = interferometer(1e6)
    total, _ = phantom_integral(ph, voxel=0.02)
    assert abs(total / 1e6 - 1) < 0.01
    clumps = ph.params["clumps"]
    assert len(clumps) == 40 and sum(c["share"] for c in clumps) == pytest.approx(0.25)
    assert all(0.012 <= c["sigma_mm"] <= 0.035 for c in clumps)
    assert interferometer(1e6).params == ph.params  # the seed fixes the layout
    assert interferometer(1e6, seed=7).params["clumps"] != clumps


def test_culled_primitives_give_the_density_of_the_whole_sum():
    """Clumps are evaluated only inside their ±8σ boxes; the density equals the plain weighted sum."""
    ph = interferometer(1e6, clumps=12)
    g = torch.Generator().manual_seed(0)
    points = (torch.rand(20000, 3, generator=g, dtype=torch.float64) - 0.5) * 2.4
    plain = sum(w * p.density(points) for w, p in zip(ph.weights, ph.primitives, strict=True))
    plain = ph._scale * plain * ph.fringes.modulation(points)
    torch.testing.assert_close(ph.density(points), plain, rtol=1e-12, atol=1e-12 * float(plain.max()))
    grid = points.reshape(100, 200, 3)
    assert ph.density(grid).shape == (100, 200)
