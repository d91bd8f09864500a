"""Splitting a run into independent halves: binomial thinning and even/odd shots."""

import math

import pytest
import torch

from recon.errors import ConfigError
from recon.fitting.data import FitData, ViewData, split_fit_data
from tests.optics.helpers import make_system


def _data(frames, counts_value=50.0):
    system = make_system(dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    counts = torch.poisson(torch.full((frames, 6, 8), counts_value), generator=g) + 2 * torch.randn(
        frames, 6, 8, generator=g)
    mask = torch.ones(frames, 6, 8, dtype=torch.bool)
    mask[0, 0, 0] = False
    counts[0, 0, 0] = float("nan")  # a masked pixel may hold anything
    views = (ViewData("direct", 0, (0, 0, 8, 6), counts, mask),)
    return FitData(system, views, 200.0, read_noise_e=2.0)


def test_thinning_halves_hold_half_the_photons_each():
    data = _data(1)
    (a, b), how = split_fit_data(data, "auto", seed=1)
    assert how == "thinning"
    assert a.photons_per_atom == b.photons_per_atom == 100.0
    assert a.read_noise_e == pytest.approx(2.0 / math.sqrt(2))
    total = a.views[0].electrons + b.views[0].electrons
    usable = data.views[0].mask
    assert torch.allclose(total[usable], data.views[0].electrons[usable].round(), atol=1e-4)
    assert torch.isfinite(a.views[0].electrons).all() and torch.equal(a.views[0].mask, usable)
    (a2, _), _ = split_fit_data(data, "thinning", seed=1)
    assert torch.equal(a2.views[0].electrons, a.views[0].electrons)  # the seed fixes the split


def test_frame_split_takes_even_and_odd_shots_and_needs_two():
    data = _data(5)
    (a, b), how = split_fit_data(data, "auto", seed=0)
    assert how == "frames" and a.photons_per_atom == 200.0 and a.read_noise_e == 2.0
    assert torch.equal(a.views[0].electrons.nan_to_num(-1.0), data.views[0].electrons[0::2].nan_to_num(-1.0))
    assert a.views[0].electrons.shape[0] == 3 and b.views[0].electrons.shape[0] == 2
    assert torch.equal(b.views[0].electrons, data.views[0].electrons[1::2])
    with pytest.raises(ConfigError, match="--split thinning"):
        split_fit_data(_data(1), "frames", seed=0)
    with pytest.raises(ConfigError, match="--split must be"):
        split_fit_data(data, "halves", seed=0)
