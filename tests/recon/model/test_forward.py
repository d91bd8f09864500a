"""The forward path: chunked tracing (what a seed fixes, what chunking changes) and batched rendering."""

import math

import pytest
import torch

from optics.camera import roi_pixel_centers
from optics.design import view_regions
from optics.trace import sample_pixel_samples, trace_pixels
from recon.model.forward import render_batches, sees_the_box, trace_in_chunks
from recon.model.render import RayBatch, compact_rays, render_pixels
from tests.optics.helpers import make_system

F64 = torch.float64
SAMPLES = 3


@pytest.fixture(scope="module")
def direct():
    """The test camera (2.4 mm box, no mirrors) and 80 pixels (10 × 8) at the centre of its view."""
    system = make_system(dtype=F64)
    x0, y0, w, h = view_regions(system)[0].roi
    roi = (x0 + w // 2 - 5, y0 + h // 2 - 4, 10, 8)
    return system, roi_pixel_centers(roi, dtype=F64).reshape(-1, 2)


def _trace(system, uv, chunk_pixels, seed=0, samples=SAMPLES):
    gen = torch.Generator().manual_seed(seed)
    return list(trace_in_chunks(system, uv, camera=0, samples=samples, generator=gen,
                                chunk_pixels=chunk_pixels))


def _cat(chunks, name):
    return torch.cat([getattr(traced, name) for _, traced in chunks])


def _gaussian(p):
    return 1e3 * torch.exp(-(p**2).sum(-1) / (2 * 0.3**2))


def _uniform(value):
    return lambda p: torch.full(p.shape[:-1], value, dtype=p.dtype)


def _split(rays: RayBatch, n_pixels: int, size: int) -> list[tuple[slice, RayBatch]]:
    """The segments of pixels ``[a, a + size)`` as batches numbered from 0 (rays sorted by pixel)."""
    out = []
    for a in range(0, n_pixels, size):
        b = min(a + size, n_pixels)
        part = rays.select((rays.pixel >= a) & (rays.pixel < b))
        out.append((slice(a, b), RayBatch(part.origins, part.directions, part.weights, part.t_near,
                                          part.t_far, part.pixel - a, part.path)))
    return out


def _box_chord(origins, directions, lo, hi):
    """Length of the line ``o + t d`` inside the box [lo, hi] (slab method), mm."""
    t1, t2 = (lo - origins) / directions, (hi - origins) / directions
    enter = torch.minimum(t1, t2).max(-1).values
    leave = torch.maximum(t1, t2).min(-1).values
    return (leave - enter).clamp_min(0)


# --------------------------------------------------------------------------- trace_in_chunks


def test_chunks_tile_the_pixels_in_order(direct):
    system, uv = direct
    chunks = _trace(system, uv, chunk_pixels=7)
    wheres = [where for where, _ in chunks]
    assert wheres == [slice(a, min(a + 7, 80)) for a in range(0, 80, 7)]
    assert wheres[-1] == slice(77, 80)
    for where, rays in chunks:
        assert len(rays) and 0 <= int(rays.pixel.min()) and int(rays.pixel.max()) < where.stop - where.start
    assert [where for where, _ in _trace(system, uv, chunk_pixels=80)] == [slice(0, 80)]
    assert [where for where, _ in _trace(system, uv, chunk_pixels=1000)] == [slice(0, 80)]


def test_a_seed_fixes_every_sample_of_every_chunk(direct):
    system, uv = direct
    a, b = _trace(system, uv, chunk_pixels=7, seed=4), _trace(system, uv, chunk_pixels=7, seed=4)
    for name in ("origins", "directions", "weights", "t_near", "t_far", "pixel", "path"):
        assert torch.equal(_cat(a, name), _cat(b, name)), name
    # The same as drawing each chunk's samples in turn from one reseeded generator: the valid
    # slots of the dense trace, in its order, bit for bit.
    gen = torch.Generator().manual_seed(4)
    for where, rays in a:
        sub, ap = sample_pixel_samples(where.stop - where.start, SAMPLES, generator=gen, dtype=uv.dtype)
        expected = compact_rays(trace_pixels(system, uv[where], camera=0, subpixel=sub, aperture=ap))
        for name in RayBatch.__dataclass_fields__:
            assert torch.equal(getattr(rays, name), getattr(expected, name)), name
    assert not torch.equal(_cat(a, "origins"), _cat(_trace(system, uv, chunk_pixels=7, seed=5), "origins"))


def test_one_chunk_is_one_chunk_whatever_chunk_pixels_says(direct):
    system, uv = direct
    (_, whole), (_, larger) = _trace(system, uv, chunk_pixels=80)[0], _trace(system, uv, chunk_pixels=1000)[0]
    assert torch.equal(whole.origins, larger.origins) and torch.equal(whole.directions, larger.directions)


def test_chunking_changes_the_draws_but_not_the_expected_image(direct):
    system, uv = direct
    samples = 8
    chunked, whole = _trace(system, uv, 7, samples=samples), _trace(system, uv, 80, samples=samples)
    # Not invariant: the generator is consumed chunk by chunk, so pixels get other samples.
    assert not torch.allclose(_cat(chunked, "origins"), _cat(whole, "origins"))

    # Invariant in expectation: the image of a uniform density barely depends on the samples.
    def image(chunks):
        return render_batches(_uniform(1.0), chunks, len(uv), photons_per_atom=4 * math.pi, step_mm=0.05)

    a, b = image(chunked), image(whole)
    assert (a > 0).all()
    assert torch.allclose(a, b, rtol=2e-3), float(((a - b) / b).abs().max())


# --------------------------------------------------------------------------- render_batches


def test_uniform_density_gives_weight_times_chord_length(direct):
    system, uv = direct
    chunks = _trace(system, uv, chunk_pixels=16)
    batches = chunks
    rho, y = 3.0, 200.0
    got = render_batches(_uniform(rho), batches, len(uv), photons_per_atom=y, step_mm=0.07)
    lo, hi = system.volume.min_mm, system.volume.max_mm
    expected = torch.zeros(len(uv), dtype=F64)
    for where, rays in batches:
        chord = _box_chord(rays.origins, rays.directions, lo, hi)
        assert torch.allclose(rays.t_far - rays.t_near, chord, atol=1e-9)
        # The box is 2.4 mm deep along the (near-axial) rays.
        assert ((chord > 2.4) & (chord < 2.41)).all()
        expected[where] += torch.zeros(where.stop - where.start, dtype=F64).index_add(
            0, rays.pixel, rays.weights * chord * rho * y / (4 * math.pi))
    assert torch.allclose(got.double(), expected, rtol=1e-6)


def test_batches_render_like_the_whole_batch_with_cumulative_progress(direct):
    system, uv = direct
    ((_, rays),) = _trace(system, uv, chunk_pixels=80)
    done = []
    got = render_batches(_gaussian, _split(rays, 80, 30), 80, photons_per_atom=50.0, step_mm=0.05,
                         generator=torch.Generator().manual_seed(7), progress=done.append)
    whole = render_pixels(_gaussian, rays, 80, photons_per_atom=50.0, step_mm=0.05,
                          generator=torch.Generator().manual_seed(7))
    assert done == [30, 60, 80]
    assert got.dtype == torch.float32 and whole.dtype == F64
    assert torch.allclose(got, whole.float(), rtol=1e-6)
    # The jitter is random: the agreement above is the same samples, not insensitivity to them.
    other = render_batches(_gaussian, _split(rays, 80, 30), 80, photons_per_atom=50.0, step_mm=0.05,
                           generator=torch.Generator().manual_seed(8))
    assert not torch.allclose(got, other, rtol=1e-6)


def test_pixels_of_no_batch_stay_zero_and_batches_are_consumed_lazily(direct):
    system, uv = direct
    ((_, rays),) = _trace(system, uv, chunk_pixels=80)
    seen = []

    def lazy():
        for where, batch in _split(rays, 40, 25):  # only the first 40 pixels
            seen.append(where.stop)
            yield where, batch

    got = render_batches(_gaussian, lazy(), 80, photons_per_atom=50.0, step_mm=0.05,
                         progress=lambda n: seen.append(-n))
    assert seen == [25, -25, 40, -40]  # each batch is rendered before the next is drawn
    assert (got[:40] > 0).all() and torch.equal(got[40:], torch.zeros(40))
    assert got.shape == (80,)


# --------------------------------------------------------------------------- sees_the_box

MIRROR = {"name": "m1", "center_mm": [0.0, 12.0, 12.0], "normal": [0.0, -0.3, -0.95], "shape": "circle",
          "radius_mm": 4.0, "reflectivity": 0.95}


def test_a_view_sees_the_box_by_its_own_path_only():
    system = make_system(mirrors=[MIRROR], dtype=torch.float32)  # float32 is traced in float64
    regions = view_regions(system)
    assert [r.path for r in regions] == [0, 1]
    for region in regions:
        assert sees_the_box(system, region.roi, camera=0)
        assert sees_the_box(system, region.roi, camera=0, path=region.path)
        assert not sees_the_box(system, region.roi, camera=0, path=1 - region.path), region.name


def test_a_region_off_every_view_does_not_see_the_box(direct):
    system, uv = direct
    assert not sees_the_box(system, (0, 0, 40, 30), camera=0)
    u, v = (int(c) for c in uv[len(uv) // 2])
    assert sees_the_box(system, (u, v, 1, 1), camera=0)  # a region smaller than the lattice: every pixel
    assert sees_the_box(system, (u - 300, v, 301, 1), camera=0, grid=2)  # the lattice spans both ends
    assert not sees_the_box(system, (u - 300, v, 200, 1), camera=0, grid=2)
