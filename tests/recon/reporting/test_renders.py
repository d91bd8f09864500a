"""renders/: one PNG per view, the maximum-intensity projections and the loss curve, written atomically."""

import struct

import numpy as np
import pytest
import torch

from recon.fitting.data import FitData, ViewData
from recon.fitting.raypool import RayPool
from recon.io.volume import Volume
from recon.model.render import RayBatch
from recon.reporting.renders import write_renders
from tests.conftest import slow
from tests.optics.helpers import make_system

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """(width, height) from the IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def _view(name, roi, frames, rng):
    _, _, w, h = roi
    electrons = torch.from_numpy(rng.poisson(20.0, (frames, h, w)).astype(np.float32))
    return ViewData(name, 0, roi, electrons, torch.ones(frames, h, w, dtype=torch.bool))


@pytest.fixture(scope="module")
def fit():
    """A two-view fit's data, pool (no rays: only the measured sums), prediction, volume and losses."""
    rng = np.random.default_rng(0)
    views = (_view("direct", (10, 20, 7, 5), 2, rng), _view("m1", (100, 40, 4, 6), 2, rng))
    data = FitData(make_system(), views, photons_per_atom=200.0)
    summed = torch.cat([(v.electrons * v.mask).sum(0).reshape(-1) for v in views])
    n_frames = torch.cat([v.mask.sum(0).reshape(-1) for v in views])
    n = summed.shape[0]
    empty = torch.zeros(0)
    rays = RayBatch(torch.zeros(0, 3), torch.zeros(0, 3), empty, empty, empty,
                    torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    pool = RayPool(rays, torch.zeros(n + 1, dtype=torch.long), summed, n_frames,
                   torch.cat([torch.full((7 * 5,), 0), torch.full((4 * 6,), 1)]), 2.0, 1)
    predicted = torch.full((n,), 20.0)
    z, y, x = np.meshgrid(np.arange(6), np.arange(5), np.arange(4), indexing="ij")
    volume = Volume(np.exp(-((x - 2.0) ** 2 + (y - 2.0) ** 2 + (z - 3.0) ** 2)).astype(np.float32),
                    (-0.2, -0.3, -0.4), (0.1, 0.15, 0.2), unit="atoms/mm^3")
    losses = [10.0 / (1 + k) for k in range(30)]
    return data, pool, predicted, volume, losses


@pytest.fixture(scope="module")
def written(tmp_path_factory, fit):
    out = tmp_path_factory.mktemp("renders") / "deep" / "fit"  # parents are made
    return out, write_renders(out, *fit)


def test_one_png_per_view_then_mip_and_loss(written):
    out, paths = written
    renders = out / "renders"
    assert paths == [renders / "view_direct.png", renders / "view_m1.png", renders / "mip.png",
                     renders / "loss.png"]


def test_pictures_are_complete_pngs_of_the_figure_sizes(written):
    _, paths = written
    # figsize × dpi 100: the view and MIP figures 12 × 4 in, the loss curve 6 × 4 in.
    assert [_png_size(p) for p in paths] == [(1200, 400), (1200, 400), (1200, 400), (600, 400)]
    assert all(p.read_bytes()[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82" for p in paths)


def test_no_temporary_files_are_left(written):
    out, paths = written
    assert sorted((out / "renders").iterdir()) == sorted(paths)
    assert sorted(out.iterdir()) == [out / "renders"]


@slow
def test_rewriting_replaces_the_pictures(tmp_path, fit):
    data, pool, predicted, volume, losses = fit
    first = write_renders(tmp_path, data, pool, predicted, volume, losses)
    before = first[0].read_bytes()
    second = write_renders(tmp_path, data, pool, predicted * 3.0, volume, losses)
    assert second == first and first[0].read_bytes() != before
    assert sorted((tmp_path / "renders").iterdir()) == sorted(second)


def test_a_views_picture_does_not_depend_on_the_views_drawn_before_it(tmp_path, fit):
    """The views share one figure: each picture is still that of its view alone."""
    import matplotlib.image

    data, pool, predicted, volume, losses = fit
    both = write_renders(tmp_path / "both", data, pool, predicted, volume, losses)
    n_first = 7 * 5
    alone_pool = RayPool(pool.rays, pool.offsets[n_first:] - pool.offsets[n_first],
                         pool.summed_electrons[n_first:], pool.n_frames[n_first:],
                         pool.view_of_pixel[n_first:] - 1, pool.read_noise_e, 1)
    alone_data = FitData(data.system, data.views[1:], photons_per_atom=data.photons_per_atom)
    alone = write_renders(tmp_path / "alone", alone_data, alone_pool, predicted[n_first:], volume, losses)
    second, first = matplotlib.image.imread(both[1]), matplotlib.image.imread(both[0])
    assert np.array_equal(second, matplotlib.image.imread(alone[0]))
    assert not np.array_equal(second, first)
