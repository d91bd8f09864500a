import json
import math
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch

from recon.errors import ConfigError
from recon.phantoms import (
    PHANTOMS,
    Box,
    Donut,
    Gaussian,
    Sphere,
    VolumePhantom,
    fringes,
    load_phantom,
    truth_volume,
)
from recon.volume import Volume

DATA = Path(__file__).resolve().parents[2] / "data" / "phantoms"
ANALYTIC = [n for n in PHANTOMS if n != "doe"]


def _integral(phantom, voxel=0.04, supersample=1):
    lo, hi = phantom.bounds_mm
    v = truth_volume(phantom, lo, hi, voxel, supersample=supersample)
    return float(v.data.astype(np.float64).sum() * voxel**3), v


@pytest.mark.parametrize("name", ANALYTIC)
def test_registry_phantoms_integrate_to_the_atom_number(name):
    ph = load_phantom(name, atoms=1e6)
    total, v = _integral(ph)  # the bounds hint holds (nearly) all the atoms
    assert abs(total / 1e6 - 1) < 0.01
    assert v.unit == "atoms/mm^3" and ph.total_atoms == ph.atoms == 1e6
    json.dumps(ph.to_dict())  # parameters are JSON-serialisable


@pytest.mark.parametrize("phase", [0.0, 0.7, math.pi / 2])
def test_fringe_normalisation_is_exact_for_a_narrow_envelope(phase):
    # σ = 0.05 mm against a 0.2 mm period: e^{−2k²σ²} = 0.29, so the phase changes the total.
    ph = fringes(1000.0, sigma_mm=0.05, phase_rad=phase)
    total, _ = _integral(ph, voxel=0.005)
    assert abs(total / 1000.0 - 1) < 2e-3
    k, s = math.pi / 0.2, 0.05
    expected_norm = 0.5 * (1 - math.exp(-2 * k * k * s * s) * math.cos(2 * phase))
    g = Gaussian.isotropic((0, 0, 0), s)
    y = torch.tensor([[0.0, 0.013, 0.0]], dtype=torch.float64)
    ratio = ph.density(y) / (1000.0 * g.density(y) * math.sin(k * 0.013 - phase) ** 2)
    assert abs(ratio.item() * expected_norm - 1) < 1e-12


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


PRIMITIVES = [
    Gaussian(np.array([0.1, -0.2, 0.05]), np.array([[0.04, 0.01, 0], [0.01, 0.02, 0.005], [0, 0.005, 0.03]])),
    Sphere(np.array([0.1, 0.0, 0.0]), 0.4, 0.03),
    Box([-0.3, -0.2, -0.1], [0.2, 0.3, 0.2], 0.0),  # faces on the quadrature cell boundaries
    Box([-0.3, -0.2, -0.1], [0.2, 0.3, 0.25], 0.02),
    Donut(np.array([0.0, 0.0, 0.1]), 0.25, 0.1, 0.15, 2),
]


@pytest.mark.parametrize("prim", PRIMITIVES, ids=lambda p: p.kind)
def test_characteristic_functions_match_quadrature(prim):
    h = 0.02
    ax = np.arange(-1.2, 1.2, h) + h / 2
    pts = torch.tensor(np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1))
    f = prim.density(pts).numpy()
    assert abs(f.sum() * h**3 - 1) < 1e-4
    q = np.array([3.0, 7.0, -5.0])
    numeric = (f * np.exp(1j * (pts.numpy() @ q))).sum() * h**3
    if isinstance(prim, Box) and prim.edge_mm == 0:  # piecewise constant on the cells: exact cell averages
        numeric *= np.prod(np.sinc(q * h / (2 * math.pi)))
    assert abs(numeric - prim.characteristic(q)) < 2e-4
    assert abs(f.max() / prim.peak() - 1) < 0.01


def test_hard_sphere_and_box_characteristic_limits():
    s = Sphere(np.zeros(3), 0.5)
    assert abs(s.characteristic(np.zeros(3)) - 1) < 1e-12
    assert abs(s.characteristic(np.array([1e-5, 0, 0])) - 1) < 1e-9
    assert abs(Box([0, 0, 0], [1, 1, 1], 0.01).characteristic(np.zeros(3)) - 1) < 1e-12


def test_centre_is_configurable():
    c = np.array([0.2, -0.1, 0.3])
    for name in ("gaussian", "fringes", "donut", "sphere"):
        ph = load_phantom(name, atoms=1.0, options={"center_mm": tuple(c)})
        _, v = _integral(ph, voxel=0.04)
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


def test_example_files_load_and_integrate():
    for path in sorted(DATA.glob("*.toml")):
        ph = load_phantom(path, atoms=5e5)
        total, _ = _integral(ph, voxel=0.01 if "fringes" in path.name else 0.03)
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


def test_truth_is_the_voxel_average_and_centred():
    ph = load_phantom("gaussian", atoms=1.0)
    v = truth_volume(ph, (-1.2, -1.2, -1.2), (1.2, 1.2, 1.2), 0.1)
    assert v.shape == (24, 24, 24) and np.allclose(v.origin_mm, (-1.15, -1.15, -1.15))
    assert math.isclose(float(v.data.max()), float(v.data[11:13, 11:13, 11:13].max()))
    # A hard box whose faces cut voxels in half: those voxels hold exactly half the density.
    box = load_phantom("box", atoms=0.6**3, options={"min_mm": (-0.25, -0.25, -0.25),
                                                     "max_mm": (0.35, 0.35, 0.35), "edge_mm": 0.0})
    t = truth_volume(box, (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0), 0.1, supersample=2)
    assert t.data[10, 10, 10] == pytest.approx(1.0) and t.data[10, 10, 7] == pytest.approx(0.5)
    assert t.data[10, 10, 6] == 0.0 and t.data[10, 10, 13] == pytest.approx(0.5)
    assert t.meta["atoms_in_grid"] == pytest.approx(0.6**3)
    with pytest.raises(ConfigError, match="truth_volume"):
        truth_volume(ph, (0, 0, 0), (1, 1, -1), 0.1)


def test_doe_phantom_is_opaque_and_relative():
    pytest.importorskip("pyvista")
    ph = load_phantom("doe", atoms=1.0)
    assert ph.model == "emission-absorption" and ph.total_atoms == pytest.approx(20 * 0.870, rel=0.02)
    v = truth_volume(ph, (-1.2, -1.2, -1.2), (1.2, 1.2, 1.2), 0.05)
    assert v.unit == "relative" and 19.0 < float(v.data.max()) <= 20.0 + 1e-4
