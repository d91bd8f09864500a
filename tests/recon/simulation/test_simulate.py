"""Simulated runs: the regions checked against the sensor, the expected views, the run written."""

import dataclasses
import json
import math

import numpy as np
import pytest
import tifffile
import torch

from optics.camera import roi_pixel_centers
from optics.design import view_regions
from optics.system import save_system, system_from_dict
from optics.trace import sample_pixel_samples, trace_pixels
from recon.errors import ConfigError
from recon.io.run import load_run
from recon.io.volume import read_volume
from recon.model.render import compact_rays, render_pixels
from recon.simulation.phantom_file import load_phantom
from recon.simulation.simulate import check_regions, expected_views, simulate_run, simulation_regions
from tests.micro import micro_system_dict, write_micro_system
from tests.optics.helpers import make_system

MIRROR = {"name": "m1", "center_mm": [0.0, 12.0, 12.0], "normal": [0.0, -0.3, -0.95], "shape": "circle",
          "radius_mm": 4.0, "reflectivity": 0.95}
PHOTONS = 200.0


def _in_box(atoms, sigma_mm=0.5, half_mm=0.6):
    """Atoms of a centred isotropic Gaussian inside the cube ``[-half, half]³``."""
    return atoms * math.erf(half_mm / (sigma_mm * math.sqrt(2))) ** 3


def _aperture_fraction(system):
    """Fraction of 4π the lens aperture subtends from the box centre (on the axis, no window)."""
    cam = system.cameras[0]
    radius, distance = float(cam.lens.aperture_radius_mm), float(cam.pose.position_mm.norm())
    return (1 - math.cos(math.atan(radius / distance))) / 2


@pytest.fixture(scope="module")
def micro():
    """The micro instrument (one direct 27 × 27 px view of a 1.2 mm box) and its region."""
    system = system_from_dict(micro_system_dict())
    return system, simulation_regions(system)


@pytest.fixture(scope="module")
def gaussian():
    return load_phantom("gaussian", atoms=1e6)


@pytest.fixture(scope="module")
def micro_file(tmp_path_factory):
    return write_micro_system(tmp_path_factory.mktemp("sys") / "micro.toml")


def _simulate(system_file, out, **kwargs):
    settings = {"atoms": 1e6, "samples": 2, "step_mm": 0.04, "truth_voxel_mm": 0.1, "seed": 3, **kwargs}
    return simulate_run(system_file, "gaussian", out, **settings)


# check_regions


def test_regions_inside_the_sensor_are_kept():
    system = make_system(mirrors=[MIRROR])
    regions = view_regions(system)
    assert check_regions(system, regions) == regions


def test_regions_are_clipped_to_the_sensor():
    system = make_system(mirrors=[MIRROR])
    direct, mirror = view_regions(system)
    wide = dataclasses.replace(direct, roi=(-78, 672, 1157, 157))
    tall = dataclasses.replace(mirror, roi=(817, -50, 367, 2000))
    clipped = check_regions(system, [wide, tall])
    assert [r.roi for r in clipped] == [(0, 672, 1079, 157), (817, 0, 367, 1501)]
    assert clipped[1] == dataclasses.replace(mirror, roi=(817, 0, 367, 1501))  # nothing else changes


def test_a_region_off_the_sensor_is_refused():
    system = make_system(mirrors=[MIRROR])
    mirror = dataclasses.replace(view_regions(system)[1], roi=(3000, 10, 50, 50))
    with pytest.raises(ConfigError, match=r"^tiny.toml: mirror 'm1' \(mirrors\[0\]\) images the box at "
                                          r"roi \[3000, 10, 50, 50\], outside the 2001×1501 sensor; move"):
        check_regions(system, [mirror], source="tiny.toml")


def test_a_mirror_facing_away_is_refused_in_one_line():
    system = make_system(mirrors=[dict(MIRROR, normal=[0.0, 0.3, 0.95])])
    with pytest.raises(ConfigError) as err:
        check_regions(system, view_regions(system), source="tiny.toml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("tiny.toml: no ray from the box reaches the lens by mirror 'm1' (mirrors[0]); "
                              "turn its normal")


def test_a_direct_region_that_misses_the_box_is_refused():
    system = make_system()
    away = dataclasses.replace(view_regions(system)[0], roi=(1900, 1400, 50, 50))
    with pytest.raises(ConfigError, match="no ray from the box reaches the lens by the direct view"):
        check_regions(system, [away])


# expected_views


def test_expected_views_equal_the_render_through_the_same_rays(micro, gaussian):
    system, regions = micro
    image = expected_views(system, gaussian.density, regions, photons_per_atom=PHOTONS, samples=4,
                           step_mm=0.02, seed=3)["direct"]
    # The same generator draws the pixel samples, then the jitter along the rays.
    gen = torch.Generator().manual_seed(3)
    uv = roi_pixel_centers(regions[0].roi).reshape(-1, 2)
    sub, ap = sample_pixel_samples(len(uv), 4, generator=gen)
    rays = compact_rays(trace_pixels(system, uv, camera=0, subpixel=sub, aperture=ap))
    reference = render_pixels(gaussian.density, rays, len(uv), photons_per_atom=PHOTONS, step_mm=0.02,
                              generator=gen).float()
    assert image.shape == (27, 27) and image.dtype == torch.float32
    assert torch.equal(image, reference.reshape(27, 27))


def test_a_uniform_density_gives_the_chord_lengths(micro):
    system, regions = micro
    rho = 1000.0
    image = expected_views(system, lambda p: torch.full(p.shape[:-1], rho), regions, photons_per_atom=PHOTONS,
                           samples=4, seed=5)["direct"]
    gen = torch.Generator().manual_seed(5)
    uv = roi_pixel_centers(regions[0].roi).reshape(-1, 2)
    sub, ap = sample_pixel_samples(len(uv), 4, generator=gen)
    traced = trace_pixels(system, uv, camera=0, subpixel=sub, aperture=ap)
    chords = ((traced.t_far - traced.t_near).clamp_min(0) * traced.weights * traced.valid).sum(dim=(1, 2))
    torch.testing.assert_close(image, (rho * PHOTONS / (4 * math.pi) * chords).reshape(27, 27),
                               rtol=1e-5, atol=1e-6 * float(image.max()))


def test_expected_views_hold_the_light_of_the_atoms_in_the_box(micro, gaussian):
    system, regions = micro
    image = expected_views(system, gaussian.density, regions, photons_per_atom=PHOTONS, samples=16)["direct"]
    qe = system.cameras[0].sensor.quantum_efficiency
    expected = _in_box(1e6) * PHOTONS * qe * _aperture_fraction(system)
    # 2 %: Monte-Carlo over 16 sub-pixel × aperture samples per pixel (≈ 0.5 % here).
    assert float(image.sum()) == pytest.approx(expected, rel=0.02)


def test_expected_views_are_linear_in_atoms_and_photons(micro):
    system, regions = micro

    def render(atoms, photons):
        phantom = load_phantom("gaussian", atoms=atoms)
        return expected_views(system, phantom.density, regions, photons_per_atom=photons, samples=2, seed=1)

    base = render(1e6, PHOTONS)["direct"]
    torch.testing.assert_close(render(3e6, PHOTONS)["direct"], 3 * base, rtol=1e-5, atol=0.0)
    torch.testing.assert_close(render(1e6, 0.5 * PHOTONS)["direct"], 0.5 * base, rtol=1e-5, atol=0.0)


def test_progress_reaches_the_total_over_every_region(micro, gaussian):
    system, regions = micro
    both = [regions[0], dataclasses.replace(regions[0], name="again")]
    calls = []
    out = expected_views(system, gaussian.density, both, photons_per_atom=PHOTONS, samples=1,
                         chunk_pixels=200, progress=lambda done, total: calls.append((done, total)))
    assert list(out) == ["direct", "again"]
    assert {total for _, total in calls} == {2 * 729}
    done = [d for d, _ in calls]
    assert done == [200, 400, 600, 729, 929, 1129, 1329, 1458]


def test_expected_views_of_a_float64_system(micro, gaussian):
    """A float64 system renders (its samples are drawn in float64, so they differ from float32's)."""
    system, regions = micro
    single = expected_views(system, gaussian.density, regions, photons_per_atom=PHOTONS, samples=16)
    double = expected_views(system.to(torch.float64), gaussian.density, regions, photons_per_atom=PHOTONS,
                            samples=16)
    assert double["direct"].dtype == torch.float32 and double["direct"].shape == single["direct"].shape
    # same expectation, other samples: the totals agree to the sampling noise of 16 samples a pixel
    assert float(double["direct"].sum()) == pytest.approx(float(single["direct"].sum()), rel=0.01)


# simulate_run


@pytest.fixture(scope="module")
def micro_run(micro_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    return out, _simulate(micro_file, out)


def test_simulated_run_loads_with_its_truth(micro_file, micro_run):
    out, summary = micro_run
    assert set(summary) == {"views", "pixels", "expected_e", "atoms_in_box", "out"}
    assert (summary["views"], summary["pixels"], summary["out"]) == (1, 729, str(out))
    run = load_run(out)
    assert [v.name for v in run.views] == ["direct"] and run.photons_per_atom == PHOTONS
    assert run.views[0].n_frames == 1 and run.views[0].dark_pages == 1
    assert (out / "system.toml").read_text() == micro_file.read_text()
    truth = read_volume(run.truth_volume)
    in_truth = float(truth.data.sum(dtype=np.float64) * np.prod(truth.voxel_size_mm))
    assert in_truth == pytest.approx(summary["atoms_in_box"], rel=1e-5)
    assert in_truth == pytest.approx(_in_box(1e6), rel=2e-3)  # midpoint rule on 0.1 mm voxels
    phantom = json.loads(run.truth_phantom.read_text())
    assert phantom["phantom"] == "gaussian" and phantom["atoms_total"] == 1e6 and phantom["seed"] == 3
    assert phantom["atoms_in_box"] == pytest.approx(in_truth, rel=1e-5)


def test_noise_free_frames_are_the_expected_views(micro, micro_file, gaussian, tmp_path):
    system, regions = micro
    summary = _simulate(micro_file, tmp_path / "run", noise="none", frames=2)
    run = load_run(tmp_path / "run")
    expected = expected_views(system, gaussian.density, regions, photons_per_atom=PHOTONS, samples=2,
                              step_mm=0.04, seed=3)["direct"]
    electrons = run.views[0].electrons
    assert electrons.shape == (2, 27, 27) and run.views[0].dark_path is None
    torch.testing.assert_close(electrons, expected.expand(2, 27, 27), rtol=1e-5, atol=1e-3)
    assert summary["expected_e"] == pytest.approx(float(expected.sum()), rel=1e-6)


def test_poisson_frames_scatter_about_the_expected_views(micro_run):
    out, summary = micro_run
    electrons = load_run(out).views[0].electrons
    # Shot noise of the sum plus read noise (2 e⁻) of 729 pixels in the frame and in the dark.
    sigma = math.sqrt(summary["expected_e"] + 2 * 729 * 2.0**2)
    assert float(electrons.sum()) == pytest.approx(summary["expected_e"], abs=5 * sigma)


def test_the_same_seed_reproduces_the_run_bit_for_bit(micro_file, micro_run, tmp_path):
    out, _ = micro_run
    _simulate(micro_file, tmp_path / "again")
    for name in ("views/direct.tif", "views/direct_dark.tif", "truth.tif"):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "again" / name), tifffile.imread(out / name))
    assert (tmp_path / "again" / "run.toml").read_text() == (out / "run.toml").read_text()
    _simulate(micro_file, tmp_path / "other", seed=4)
    assert not np.array_equal(tifffile.imread(tmp_path / "other" / "views/direct.tif"),
                              tifffile.imread(out / "views/direct.tif"))


def test_an_existing_out_is_refused_without_overwrite(micro_file, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="run exists; pass --overwrite or choose another --out"):
        _simulate(micro_file, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    _simulate(micro_file, out, overwrite=True)
    assert load_run(out).views[0].name == "direct" and not (out / "keep.txt").exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"noise": "gauss"}, "--noise must be one of poisson, none, got 'gauss'"),
    ({"frames": 0}, "must be positive"),
    ({"samples": 0}, "must be positive"),
    ({"photons_per_atom": 0.0}, "must be positive"),
    ({"step_mm": -0.01}, "must be positive"),
    ({"camera_sensitivity": [1.0, 2.0]}, "must give 1 positive factor"),
    ({"camera_sensitivity": [0.0]}, "must give 1 positive factor"),
    ({"camera_sensitivity": [float("nan")]}, "must give 1 positive factor"),
])
def test_bad_settings_are_refused_before_writing(micro_file, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _simulate(micro_file, tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_a_mirror_facing_away_stops_the_simulation_before_writing(tmp_path):
    path = tmp_path / "away.toml"
    save_system(make_system(mirrors=[dict(MIRROR, normal=[0.0, 0.3, 0.95])]), path)
    with pytest.raises(ConfigError, match=r"away.toml: no ray from the box reaches the lens by mirror 'm1'"):
        simulate_run(path, "gaussian", tmp_path / "run", samples=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["away.toml"]


@pytest.mark.parametrize("seed", [2**70, 2**64 - 1])
def test_a_seed_beyond_64_bits_is_refused_before_writing(micro_file, tmp_path, seed):
    with pytest.raises(ConfigError, match="seed"):
        _simulate(micro_file, tmp_path / "run", seed=seed)
    assert not (tmp_path / "run").exists()


def test_every_camera_records_its_views_scaled_by_its_sensitivity(three_camera_run, three_camera_system_file,
                                                                   tmp_path):
    """Three cameras, each seeing the centred cloud from the same distance, so they would collect the
    same light: each records its sensitivity's share, names its views after itself, and the truth
    keeps the factors."""
    from tests.conftest import THREE_CAMERA_SENSITIVITY

    run = load_run(three_camera_run)
    assert [(v.name, v.camera) for v in run.views] == [("south-direct", 0), ("east-direct", 1),
                                                       ("north-direct", 2)]
    phantom = json.loads(run.truth_phantom.read_text())
    assert phantom["camera_sensitivity"] == dict(zip(("south", "east", "north"), THREE_CAMERA_SENSITIVITY,
                                                     strict=True))
    plain = _simulate(three_camera_system_file, tmp_path / "plain", noise="none", atoms=2e5, seed=5)
    scaled = _simulate(three_camera_system_file, tmp_path / "scaled", noise="none", atoms=2e5, seed=5,
                       camera_sensitivity=THREE_CAMERA_SENSITIVITY)
    mean_factor = sum(THREE_CAMERA_SENSITIVITY) / 3
    assert scaled["expected_e"] == pytest.approx(plain["expected_e"] * mean_factor, rel=0.01)
    a, b = load_run(tmp_path / "plain"), load_run(tmp_path / "scaled")
    for va, vb, factor in zip(a.views, b.views, THREE_CAMERA_SENSITIVITY, strict=True):
        torch.testing.assert_close(vb.electrons, va.electrons * factor, rtol=1e-5, atol=1e-3)


def test_the_automatic_truth_voxel_is_20_um_in_a_small_box(micro_file, tmp_path):
    from recon.simulation.simulate import TRUTH_VOXEL_MM

    _simulate(micro_file, tmp_path / "run", truth_voxel_mm=0.0)
    truth = read_volume(tmp_path / "run" / "truth.tif")
    assert truth.voxel_size_mm == pytest.approx((TRUTH_VOXEL_MM,) * 3)  # the micro box: 1.2 mm
    with pytest.raises(ConfigError, match="--truth-voxel-mm"):
        _simulate(micro_file, tmp_path / "bad", truth_voxel_mm=-0.1)
