"""Predicted views of a volume through a ray pool, and the normalised residuals per view."""

import math

import numpy as np
import pytest
import torch

from optics.design import view_regions
from recon.fitting.data import FitData, ViewData
from recon.fitting.prediction import CLOUD_BOX, CLOUD_SIGMAS, predict_views, residual_stats
from recon.fitting.raypool import build_ray_pool
from recon.io.volume import Volume
from tests.optics.helpers import make_system

SYSTEM = make_system(dtype=torch.float32)
FRAMES, H, W = 4, 16, 12
READ_NOISE_E = 2.0
Y = 100.0  # photons per atom

# A 14³ grid of 0.2 mm voxels whose centres reach 0.1 mm beyond the ±1.2 mm box.
N, SPACING, ORIGIN = 14, 0.2, -1.3


def _rois():
    x0, y0, w, h = view_regions(SYSTEM)[0].roi
    cx, cy = x0 + w // 2, y0 + h // 2
    return {"left": (cx - W, cy - H // 2, W, H), "right": (cx, cy - H // 2, W, H)}


def _data(electrons: dict, masks: dict | None = None) -> FitData:
    masks = masks or {}
    views = tuple(
        ViewData(name, 0, roi, electrons[name],
                 masks.get(name, torch.ones(FRAMES, H, W, dtype=torch.bool)))
        for name, roi in _rois().items()
    )
    return FitData(SYSTEM, views, Y, read_noise_e=READ_NOISE_E)


def _zeros() -> dict:
    return {name: torch.zeros(FRAMES, H, W) for name in _rois()}


def _volume(values: np.ndarray) -> Volume:
    return Volume(values.astype(np.float32), (ORIGIN,) * 3, (SPACING,) * 3)


def _blob(sigma=0.4, peak=2.5e6, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    c = ORIGIN + SPACING * np.arange(N)
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    r2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2
    return peak * np.exp(-r2 / (2 * sigma**2))


@pytest.fixture(scope="module")
def pool():
    return build_ray_pool(_data(_zeros()), samples=2, seed=0)


def test_a_zero_volume_predicts_zero(pool):
    got = predict_views(_volume(np.zeros((N, N, N))), pool, Y)
    assert got.shape == (pool.n_pixels,) == (2 * H * W,)
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.zeros(pool.n_pixels))


def test_prediction_is_linear_in_the_density_and_the_photons_per_atom(pool):
    a, b = _blob(), _blob(sigma=0.2, peak=1e6, centre=(0.3, -0.2, 0.1))
    pa, pb = predict_views(_volume(a), pool, Y), predict_views(_volume(b), pool, Y)
    both = predict_views(_volume(2.0 * a + 3.0 * b), pool, Y)
    assert (pa > 10).all()  # every pixel sees the blob
    assert torch.allclose(both, 2.0 * pa + 3.0 * pb, rtol=1e-5)
    assert torch.allclose(predict_views(_volume(a), pool, 2 * Y), 2.0 * pa, rtol=1e-6)


def test_a_uniform_volume_predicts_weight_times_chord(pool):
    rho = 7.0
    got = predict_views(_volume(np.full((N, N, N), rho)), pool, Y, step_mm=0.1)
    rays = pool.gather(torch.arange(pool.n_pixels))
    chord = rays.t_far - rays.t_near  # the box lies inside the grid's voxel centres
    per_segment = rays.weights * chord * rho * Y / (4 * math.pi)
    expected = torch.zeros(pool.n_pixels).index_add(0, rays.pixel, per_segment)
    assert torch.allclose(got, expected, rtol=1e-5)


def test_prediction_is_seeded_and_does_not_depend_on_the_chunking(pool):
    vol = _volume(_blob(sigma=0.15))  # sharp: the jittered samples matter
    first = predict_views(vol, pool, Y)
    assert torch.equal(predict_views(vol, pool, Y), first)
    assert len(pool.chunks(torch.arange(pool.n_pixels), 0.02, 300)) > 3  # the chunks below are many
    assert torch.equal(predict_views(vol, pool, Y, max_samples=300), first)


def _poisson_frames(predicted: torch.Tensor, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, name in enumerate(_rois()):
        lam = predicted[i * H * W:(i + 1) * H * W].reshape(H, W).expand(FRAMES, H, W)
        out[name] = torch.poisson(lam, generator=g) + READ_NOISE_E * torch.randn(FRAMES, H, W, generator=g)
    return out


def test_residuals_of_poisson_data_drawn_from_the_prediction_are_standard(pool):
    predicted = predict_views(_volume(_blob()), pool, Y)
    data = _data(_poisson_frames(predicted, seed=11))
    measured_pool = build_ray_pool(data, samples=2, seed=0)
    rows = residual_stats(data, measured_pool, predicted)
    assert [r["view"] for r in rows] == ["left", "right"]
    for i, row in enumerate(rows):
        part = slice(i * H * W, (i + 1) * H * W)
        assert row["pixels"] == H * W
        assert row["predicted_e"] == pytest.approx(float(predicted[part].sum()), rel=1e-6)
        mean = data.views[i].electrons.mean(0).sum()
        assert row["measured_e"] == pytest.approx(float(mean), rel=1e-5)
        # 192 pixels per view: σ of the mean z ≈ 0.07, of the RMS ≈ 0.05.
        assert abs(row["residual_mean"]) < 0.25, row
        assert row["residual_rms"] == pytest.approx(1.0, abs=0.15), row
        lam = predicted[part]
        assert row["cloud_pixels"] == int(_cloud(lam).sum())
        assert row["cloud_pixels"] >= 20
        assert abs(row["cloud_residual_mean"]) < 0.6  # the cloud's pixels at the noise too
        assert row["cloud_residual_rms"] == pytest.approx(1.0, abs=0.4)


def test_residuals_are_normalised_by_the_expected_noise_of_the_frame_mean(pool):
    # Noise-free frames at 2λ against a prediction λ: z = λ / √((λ + σ²) / K) per pixel.
    predicted = predict_views(_volume(_blob()), pool, Y)
    frames = {name: 2 * predicted[i * H * W:(i + 1) * H * W].reshape(H, W).expand(FRAMES, H, W).clone()
              for i, name in enumerate(_rois())}
    data = _data(frames)
    (row, _) = residual_stats(data, build_ray_pool(data, samples=2, seed=0), predicted)
    lam = predicted[: H * W].double()
    z = lam / torch.sqrt((lam + READ_NOISE_E**2) / FRAMES)
    assert row["residual_mean"] == pytest.approx(float(z.mean()), rel=1e-5)
    assert row["residual_rms"] == pytest.approx(float(z.pow(2).mean().sqrt()), rel=1e-5)
    # ... and over the cloud's pixels, whose predicted light per frame exceeds 3 σ_read
    cloud = _cloud(lam)
    assert row["cloud_pixels"] == int(cloud.sum()) > 0
    assert row["cloud_residual_mean"] == pytest.approx(float(z[cloud].mean()), rel=1e-5)
    assert row["cloud_residual_rms"] == pytest.approx(float(z[cloud].pow(2).mean().sqrt()), rel=1e-5)
    # The yardstick: a flat image at the view's mean measured value m̄.
    m = 2 * lam
    flat = (m - m.mean()) / torch.sqrt((m.mean() + READ_NOISE_E**2) / FRAMES)
    assert row["flat_residual_rms"] == pytest.approx(float(flat.pow(2).mean().sqrt()), rel=1e-4)


def _cloud(lam: torch.Tensor) -> torch.Tensor:
    """A view's (H·W,) pixels whose predicted light and its 5 × 5 local mean both exceed 3 σ_read."""
    from scipy.ndimage import uniform_filter

    local = torch.from_numpy(uniform_filter(lam.double().reshape(H, W).numpy(), CLOUD_BOX, mode="nearest"))
    return (lam > CLOUD_SIGMAS * READ_NOISE_E) & (local.reshape(-1) > CLOUD_SIGMAS * READ_NOISE_E)


def test_a_predictions_own_sampling_noise_does_not_choose_the_cloud():
    """A dim view (1.5 σ_read) whose prediction has rare hot pixels (a few rays through a clump).

    The hot pixels alone pass 3 σ_read; chosen by themselves they would be 'the cloud', and their
    residuals against data at the smooth level would be far below 0. Their local mean does not pass.
    """
    smooth = torch.full((H, W), 1.5 * READ_NOISE_E)
    predicted = smooth.clone()
    predicted[2::5, 2::5] = 10 * READ_NOISE_E  # one in a 5 × 5 box
    frames = {name: smooth.expand(FRAMES, H, W).clone() for name in _rois()}
    data = _data(frames)
    assert int((predicted > CLOUD_SIGMAS * READ_NOISE_E).sum()) > 0
    both = torch.cat([predicted.reshape(-1)] * 2)
    for row in residual_stats(data, build_ray_pool(data, samples=2, seed=0), both):
        assert row["cloud_pixels"] == 0 and math.isnan(row["cloud_residual_mean"])


def test_the_cloud_residuals_show_a_misfit_that_the_dark_sky_dilutes():
    """Half of each view dark (λ = 0), half a cloud measured 1.5× brighter than predicted."""
    lam = torch.zeros(H, W)
    lam[:, : W // 2] = 100.0
    frames = {name: (1.5 * lam).expand(FRAMES, H, W).clone() for name in _rois()}
    data = _data(frames)
    predicted = torch.cat([lam.reshape(-1)] * len(frames))
    for row in residual_stats(data, build_ray_pool(data, samples=2, seed=0), predicted):
        z = 50.0 / math.sqrt((100.0 + READ_NOISE_E**2) / FRAMES)
        assert row["cloud_pixels"] == H * (W // 2)  # the dark half is not the cloud's
        assert row["cloud_residual_mean"] == pytest.approx(z, rel=1e-5)
        assert row["cloud_residual_rms"] == pytest.approx(z, rel=1e-5)
        assert row["residual_mean"] == pytest.approx(z / 2, rel=1e-5)  # diluted by the dark half


def test_a_prediction_that_explains_the_structure_beats_the_flat_image(pool):
    predicted = predict_views(_volume(_blob(sigma=0.15, peak=5e7)), pool, Y)  # a sharp blob: structure
    data = _data(_poisson_frames(predicted, seed=5))
    rows = residual_stats(data, build_ray_pool(data, samples=2, seed=0), predicted)
    for row in rows:
        assert row["residual_rms"] == pytest.approx(1.0, abs=0.15)
        assert row["flat_residual_rms"] > 3 * row["residual_rms"], row
    flat_data = _data({name: torch.full((FRAMES, H, W), 40.0) for name in _rois()})
    (row, _) = residual_stats(flat_data, build_ray_pool(flat_data, samples=2, seed=0), predicted)
    assert row["flat_residual_rms"] == pytest.approx(0.0, abs=1e-6)  # a flat view is its own mean


def test_pixels_without_usable_frames_are_left_out(pool):
    predicted = predict_views(_volume(_blob()), pool, Y)
    frames = _poisson_frames(predicted, seed=2)
    left = torch.ones(FRAMES, H, W, dtype=torch.bool)
    left[:, 0, :3] = False  # three pixels masked in every frame
    left[0, 5, 5] = False  # one pixel masked in one frame only: still counted
    masks = {"left": left, "right": torch.zeros(FRAMES, H, W, dtype=torch.bool)}
    data = _data(frames, masks)
    left_row, right_row = residual_stats(data, build_ray_pool(data, samples=2, seed=0), predicted)
    assert left_row["pixels"] == H * W - 3
    usable = left.any(0).reshape(-1)
    assert left_row["predicted_e"] == pytest.approx(float(predicted[: H * W][usable].sum()), rel=1e-6)
    assert right_row["pixels"] == 0 and right_row["predicted_e"] == 0.0 and right_row["measured_e"] == 0.0
    assert all(math.isnan(right_row[k]) for k in ("residual_mean", "residual_rms", "flat_residual_rms"))
    assert math.isfinite(left_row["flat_residual_rms"])


def test_a_fit_of_linear_voxels_is_predicted_through_its_own_operator(pool):
    """EM fields: the mean of their projections at the stratum midpoints; other fields: their volume."""
    from recon.fitting.prediction import predict_fit
    from recon.fitting.projector import Projector
    from recon.model.fields.voxel import VoxelField

    box = SYSTEM.volume
    lo, hi = box.min_mm.tolist(), box.max_mm.tolist()
    fields = []
    for seed in (1, 2):
        field = VoxelField(lo, hi, resolution=6, activation="linear", init_density=1e5)
        with torch.no_grad():
            field.grid.uniform_(0.0, 2.0, generator=torch.Generator().manual_seed(seed))
        fields.append(field)
    op = Projector(pool, lo, hi, (6, 6, 6), photons_per_atom=Y, step_mm=0.05)
    pixels = torch.arange(pool.n_pixels)
    expected = sum(op.forward(1e5 * f.grid.detach()[0, 0], pixels) for f in fields) / 2
    got = predict_fit(fields, _volume(_blob()), pool, Y, step_mm=0.05)
    assert got.dtype == torch.float32 and (got > 0).all()
    assert torch.allclose(got, expected.float(), rtol=1e-6)
    softplus = VoxelField(lo, hi, resolution=6, init_density=1e5)
    volume = _volume(_blob())
    assert torch.equal(predict_fit([softplus], volume, pool, Y), predict_views(volume, pool, Y))


def test_a_neural_fields_prediction_does_not_depend_on_its_runs_of_pixels(pool):
    from recon.fitting.config import FitConfig, field_factory
    from recon.fitting.projector import predict_pixels

    field = field_factory(FitConfig(field="siren"), [-1.2] * 3, [1.2] * 3, 1.0, "cpu")
    pixels = torch.arange(pool.n_pixels)
    assert len(pool.chunks(pixels, 0.05, 500)) > 3
    whole = predict_pixels(field, pool, pixels, photons_per_atom=Y, step_mm=0.05, max_samples=1 << 30)
    runs = predict_pixels(field, pool, pixels, photons_per_atom=Y, step_mm=0.05, max_samples=500)
    assert whole.abs().max() > 0 and torch.allclose(runs, whole, rtol=1e-5, atol=0)
