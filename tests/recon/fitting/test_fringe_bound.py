"""The fringe model's Cramér–Rao bound through the instrument: its scaling with light and its parts."""

import dataclasses
import math

import pytest
import torch

from recon.analysis.fringes import FIGURES, fringe_model
from recon.fitting.fringe_bound import fringe_bound
from recon.fitting.projector import Projector, voxel_centres
from tests.micro import make_micro_pool_case


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    case = make_micro_pool_case(tmp_path_factory.mktemp("bound"))
    data, pool = case["data"], case["pool"]
    box = data.system.volume
    lo, hi = box.min_mm.tolist(), box.max_mm.tolist()
    projector = Projector(pool, lo, hi, (16, 16, 16), photons_per_atom=200.0, step_mm=0.05)
    centre = [(a + b) / 2 for a, b in zip(lo, hi, strict=True)]
    extent = min(b - a for a, b in zip(lo, hi, strict=True))
    k = 2 * math.pi / (extent / 4) * torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)
    sd = math.log(extent / 6)
    params = torch.tensor([math.log(1e5), *centre, sd, sd, sd, 0.0, 0.0, 0.0, 0.7, *k, 0.4, 0.0],
                          dtype=torch.float64)
    return {"pool": pool, "projector": projector, "params": params}


def _phase_sd(micro, params, pool=None):
    return fringe_bound(params, pool or micro["pool"], micro["projector"])["phase_at_origin_rad"]


def test_every_figure_has_a_finite_bound(micro):
    bound = fringe_bound(micro["params"], micro["pool"], micro["projector"])
    assert set(bound) == {name for name, _ in FIGURES}
    for key in ("phase_rad", "phase_at_origin_rad", "contrast", "period_mm"):
        assert math.isfinite(bound[key]) and bound[key] > 0, key
    assert len(bound["centre_mm"]) == 3 and all(v > 0 for v in bound["centre_mm"])


def test_four_times_the_light_halves_the_bound_without_read_noise(micro):
    """Poisson counts alone: the information grows as the light, so every sd shrinks as 1/√light."""
    quiet = dataclasses.replace(micro["pool"], read_noise_e=0.0)
    bright = micro["params"].clone()
    bright[0] += math.log(100.0)  # light enough that the likelihood's σ² floor of 1e-3 e⁻ is nothing
    brighter = bright.clone()
    brighter[0] += math.log(4.0)  # four times the peak (the floor is 0)
    ratio = _phase_sd(micro, bright, quiet) / _phase_sd(micro, brighter, quiet)
    assert ratio == pytest.approx(2.0, rel=1e-4)


def test_read_noise_and_less_contrast_loosen_the_phase(micro):
    noisy = dataclasses.replace(micro["pool"], read_noise_e=30.0)
    assert _phase_sd(micro, micro["params"], noisy) > _phase_sd(micro, micro["params"])
    faint = micro["params"].clone()
    faint[10] = 0.2
    assert _phase_sd(micro, faint) > _phase_sd(micro, micro["params"])


def test_a_figure_free_to_trade_with_others_is_known_less_than_alone(micro):
    """The floor b enters λ linearly (∂λ/∂b = A·1): its sd with the 15 other parameters free is at
    least 1/√I_bb, the sd were they known — computed here from the projector independently."""
    op, pool = micro["projector"], micro["pool"]
    nz, ny, nx = op.shape
    points = voxel_centres(op)
    assert torch.allclose(points[0] * 2, torch.tensor(op.box_min_mm, dtype=torch.float64) * 2
                          + (torch.tensor(op.box_max_mm) - torch.tensor(op.box_min_mm)).double()
                          / torch.tensor([nx, ny, nz]))  # voxel (0, 0, 0)'s centre, half a voxel in
    pixels = (pool.observed_frames > 0).nonzero(as_tuple=True)[0]
    with torch.no_grad():
        grid = fringe_model(micro["params"], points).reshape(nz, ny, nx).float()
    lam = op.forward(grid, pixels).double()
    slope = op.forward(torch.ones(nz, ny, nx), pixels).double()
    info = float((pool.n_frames[pixels] * slope ** 2 / (lam + pool.read_noise_e ** 2 + 1e-3)).sum())
    alone = 1 / math.sqrt(info)
    free = fringe_bound(micro["params"], pool, op)["floor"]
    assert free >= alone * (1 - 1e-6) and free < 100 * alone


def test_a_pixel_stride_estimates_the_same_bound(micro):
    """A third of the micro run's few pixels, each counted three times: the same bound within the
    scatter of so small a subsample, and below the √3 × that forgetting to count each pixel three
    times would give."""
    full = fringe_bound(micro["params"], micro["pool"], micro["projector"])["phase_at_origin_rad"]
    thinned = fringe_bound(micro["params"], micro["pool"], micro["projector"], stride=3)
    thinned = thinned["phase_at_origin_rad"]
    assert thinned == pytest.approx(full, rel=0.35)
    assert thinned < 0.8 * math.sqrt(3) * full
