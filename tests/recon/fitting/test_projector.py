"""The projector: the numba kernels against the torch specification, the adjoint identity, autograd."""

import dataclasses
import math

import pytest
import torch

from recon.errors import ShapeError
from recon.fitting.projector import Projector, grid_density, predict_pixels, project, voxel_values
from recon.model.fields.voxel import VoxelField
from recon.model.render import render_pixels
from tests.micro import make_micro_pool_case

STEP = 0.05


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    case = make_micro_pool_case(tmp_path_factory.mktemp("projector"))
    data, pool = case["data"], case["pool"]
    box = data.system.volume
    pool64 = dataclasses.replace(pool, rays=pool.rays.to(dtype=torch.float64))
    return {"data": data, "pool": pool, "pool64": pool64, "lo": box.min_mm.tolist(),
            "hi": box.max_mm.tolist()}


def _projector(micro, backend, shape=(7, 6, 5), step=STEP, pool="pool"):
    return Projector(micro[pool], micro["lo"], micro["hi"], shape, photons_per_atom=200.0, step_mm=step,
                     backend=backend)


def _grid(shape, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(7, 6, 5), (1, 4, 9), (12, 12, 12)])
def test_numba_forward_matches_the_torch_specification(micro, shape):
    """In float64 the two agree to rounding; on the float32 pool the fits use, numba stays within 1e-5.

    (torch's own float32 positions, far from the segments' origins, are off by up to 5e-5 here.)
    """
    pixels = torch.arange(micro["pool"].n_pixels)
    x = _grid(shape, 1)
    spec = _projector(micro, "torch", shape, pool="pool64").forward(x, pixels)
    assert spec.abs().max() > 0
    fast64 = _projector(micro, "numba", shape, pool="pool64").forward(x, pixels)
    assert torch.allclose(fast64, spec, rtol=1e-9, atol=1e-9 * float(spec.abs().max()))
    fast32 = _projector(micro, "numba", shape).forward(x.float(), pixels).double()
    assert torch.allclose(fast32, spec, rtol=1e-5, atol=1e-6 * float(spec.abs().max()))


def test_forward_is_the_voxel_fields_render(micro):
    """A VoxelField with the linear activation renders what the projector gives for its voxel values."""
    field = VoxelField(micro["lo"], micro["hi"], resolution=(5, 6, 7), activation="linear", init_density=3.0)
    field = field.double()
    with torch.no_grad():
        field.grid.copy_(_grid((7, 6, 5), 2)[None, None])
        field.log_gain.fill_(0.5)
    pixels = torch.arange(0, micro["pool"].n_pixels, 3)
    reference = render_pixels(field, micro["pool64"].gather(pixels), len(pixels), photons_per_atom=200.0,
                              step_mm=STEP, jitter=False).detach()
    values = voxel_values(field)
    assert torch.allclose(values, 3.0 * math.exp(0.5) * field.grid.detach()[0, 0])
    fast = _projector(micro, "numba", pool="pool64").forward(values, pixels)
    assert torch.allclose(fast, reference, rtol=1e-9, atol=1e-9 * float(reference.abs().max()))
    predicted = predict_pixels(field, micro["pool64"], pixels, photons_per_atom=200.0, step_mm=STEP)
    assert torch.allclose(predicted, reference, rtol=1e-9, atol=1e-9 * float(reference.abs().max()))
    assert voxel_values(VoxelField(micro["lo"], micro["hi"], resolution=4)) is None  # softplus: not linear


@pytest.mark.parametrize("backend,pool,tolerance", [("numba", "pool64", 1e-12), ("numba", "pool", 1e-6),
                                                    ("torch", "pool", 1e-6)])
def test_adjoint_identity(micro, backend, pool, tolerance):
    """⟨A x, y⟩ = ⟨x, Aᵀ y⟩ on random x and y, for a random subset of pixels (repeats included).

    Relative to Σ |(A x)_i y_i|. On the float32 pool the numba adjoint accumulates in float32 and
    the torch renderer sums each segment's samples in float32, hence the looser tolerance.
    """
    gen = torch.Generator().manual_seed(3)
    op = _projector(micro, backend, pool=pool)
    pixels = torch.randint(micro["pool"].n_pixels, (300,), generator=gen)
    x = _grid(op.shape, 4)
    y = torch.randn(300, generator=gen, dtype=torch.float64)
    terms = op.forward(x, pixels) * y
    lhs, scale = float(terms.sum()), float(terms.abs().sum())
    rhs = float((x * op.adjoint(y, pixels)).sum())
    assert scale > 0
    assert abs(lhs - rhs) <= tolerance * scale


def test_numba_adjoint_matches_the_torch_specification(micro):
    pixels = torch.arange(micro["pool"].n_pixels)
    y = torch.rand(len(pixels), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    spec = _projector(micro, "torch", pool="pool64").adjoint(y, pixels)
    fast = _projector(micro, "numba", pool="pool64").adjoint(y, pixels)
    assert torch.allclose(fast, spec, rtol=1e-9, atol=1e-9 * float(spec.abs().max()))
    fast32 = _projector(micro, "numba").adjoint(y, pixels)
    assert torch.allclose(fast32, spec, rtol=1e-5, atol=1e-6 * float(spec.abs().max()))


@pytest.mark.parametrize("pool,tolerance", [("pool64", 1e-12), ("pool", 1e-6)])
def test_adjoint_does_not_depend_on_threads(micro, pool, tolerance):
    """Exact in float64; on the float32 pool the blocks' sums differ by float32 rounding only."""
    pixels = torch.arange(micro["pool"].n_pixels)
    y = torch.rand(len(pixels), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    op = _projector(micro, "numba", pool=pool)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = op.adjoint(y, pixels)
        torch.set_num_threads(2)
        two = op.adjoint(y, pixels)
        again = op.adjoint(y, pixels)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(two, again)
    assert torch.allclose(one, two, rtol=tolerance, atol=tolerance * float(one.abs().max()))


def test_uniform_density_gives_the_weighted_chord_lengths(micro):
    """A uniform density c: every pixel gets Y/4π · c · Σ w · (t_far − t_near) (analytic)."""
    pool = micro["pool"]
    rays = pool.rays
    pixels = torch.arange(pool.n_pixels)
    expected = torch.zeros(pool.n_pixels, dtype=torch.float64).index_add_(
        0, rays.pixel // pool.samples, (rays.weights * (rays.t_far - rays.t_near)).double()) * 2.5 * 200 / (
            4 * torch.pi)
    got = _projector(micro, "numba").forward(torch.full((7, 6, 5), 2.5, dtype=torch.float64), pixels)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6 * float(expected.max()))


def test_project_is_differentiable_with_the_adjoint_as_its_gradient(micro):
    op = _projector(micro, "numba")
    pixels = torch.arange(0, micro["pool"].n_pixels, 2)
    x = _grid(op.shape, 7).requires_grad_(True)
    y = torch.randn(len(pixels), generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    (project(op, x, pixels) * y).sum().backward()
    assert torch.allclose(x.grad, op.adjoint(y, pixels))
    spec = _grid(op.shape, 7).requires_grad_(True)
    density = grid_density(spec, micro["lo"], micro["hi"])
    render = render_pixels(density, micro["pool64"].gather(pixels), len(pixels), photons_per_atom=200.0,
                           step_mm=STEP, jitter=False)
    (render * y).sum().backward()
    assert torch.allclose(x.grad, spec.grad, rtol=1e-5, atol=1e-6 * float(spec.grad.abs().max()))


def test_bad_shapes_and_backends_are_refused(micro):
    op = _projector(micro, "numba")
    with pytest.raises(ShapeError, match=r"\(7, 6, 5\)"):
        op.forward(torch.zeros(5, 6, 7), torch.arange(3))
    with pytest.raises(ShapeError, match="shape of pixels"):
        op.adjoint(torch.zeros(4), torch.arange(3))
    with pytest.raises(ValueError, match="backend"):
        _projector(micro, "cuda-magic")
    assert len(op.forward(torch.zeros(7, 6, 5), torch.zeros(0, dtype=torch.long))) == 0


def test_a_segment_whose_length_is_a_whole_number_of_steps_gets_torchs_strata():
    """3.0 mm / 0.03 mm: 100 strata in float32 (torch); dividing the float32 values in float64 gives 101."""
    from recon.fitting.raypool import RayPool
    from recon.model.render import RayBatch

    def f32(values):
        return torch.tensor(values, dtype=torch.float32)

    t_near = f32([24.495338439941406])
    origin = f32([[20.796281814575195, -7.331817626953125, 13.452003479003906]])
    direction = f32([[-0.8000004291534424, 0.2941758930683136, -0.5229341387748718]])
    zero = torch.zeros(1, dtype=torch.long)
    rays = RayBatch(origin, direction, f32([1.0]), t_near, t_near + 3.0, zero, zero)
    assert float(rays.t_far - rays.t_near) == 3.0
    pool = RayPool(rays, torch.tensor([0, 1]), torch.zeros(1), torch.ones(1), zero, 1.0, 1)
    x = _grid((16, 16, 16), 9).float()
    lo, hi = [-1.2] * 3, [1.2] * 3
    op = Projector(pool, lo, hi, x.shape, photons_per_atom=4 * math.pi, step_mm=0.03)
    fast = op.forward(x, torch.tensor([0]))
    spec = render_pixels(grid_density(x, lo, hi), rays, 1, photons_per_atom=4 * math.pi, step_mm=0.03,
                         jitter=False)
    assert float(fast) == pytest.approx(float(spec), rel=1e-6)


def test_the_inside_run_is_every_sample_the_box_holds():
    """The run of samples found per segment is exactly the samples that test inside, one by one.

    Random segments in padded index space, with steps along and across the faces, tiny and zero
    steps, starts outside, and samples on the faces.
    """
    import numpy as np

    from recon.fitting.projector_kernels import _inside, _inside_run

    rng = np.random.default_rng(0)
    nx, ny, nz = 7, 5, 9
    steps = [0.0, 1e-14, -1e-14, 0.37, -0.37, 1.0, -1.0, 2.5, 0.5, -0.5]
    checked = 0
    for _ in range(3000):
        c = rng.uniform(-4.0, 14.0, 3)
        if rng.random() < 0.2:  # start on a face
            c[rng.integers(3)] = rng.choice([0.5, nx + 0.5])
        d = [rng.choice(steps) if rng.random() < 0.4 else rng.normal(0.0, 0.8) for _ in range(3)]
        n = int(rng.integers(1, 40))
        inside = [k for k in range(n)
                  if _inside(c[0] + k * d[0], c[1] + k * d[1], c[2] + k * d[2], nx, ny, nz)]
        k0, k1 = _inside_run(c[0], c[1], c[2], d[0], d[1], d[2], n, nx, ny, nz)
        assert list(range(k0, k1)) == inside, (c, d, n)
        checked += len(inside) > 0
    assert checked > 300


def test_pad_and_fold_are_each_others_transpose():
    import numpy as np

    from recon.fitting.projector_kernels import fold, pad

    rng = np.random.default_rng(1)
    for shape in ((4, 3, 5), (1, 2, 1)):
        x, y = rng.normal(size=shape), rng.normal(size=(2, *(n + 2 for n in shape)))
        assert pad(x).shape == y.shape[1:]
        assert np.array_equal(pad(x)[1:-1, 1:-1, 1:-1], x)
        folded = np.empty(shape)
        fold(y, 3.0, folded)  # 3 Σ_b foldᵀ(y_b)
        assert np.isclose((pad(x) * y.sum(0)).sum() * 3.0, (x * folded).sum(), rtol=1e-12)
        by_hand = y.sum(0)  # each pad layer onto its border, axis by axis
        for axis in range(3):
            g = np.moveaxis(by_hand, axis, 0)
            g[1] += g[0]
            g[-2] += g[-1]
        assert np.allclose(folded, 3.0 * by_hand[1:-1, 1:-1, 1:-1], rtol=1e-13)
        single, double = np.empty(shape, dtype=np.float32), np.empty(shape)
        fold(y[:1].astype(np.float32), 1.0, single)  # a float32 block into a float32 grid
        fold(y[:1].astype(np.float32).astype(np.float64), 1.0, double)
        assert np.array_equal(single, double.astype(np.float32))


def test_locality_order_permutes_the_pixels_by_the_cell_of_their_first_segment(micro):
    """The same pixels, grouped by the cell code of their first segment's midpoint, index order within."""
    from recon.fitting.projector import _cell_codes

    op = _projector(micro, "numba")
    pool = micro["pool"]
    pixels = torch.arange(1, pool.n_pixels, 2)
    ordered = op.locality_order(pixels)
    assert sorted(ordered.tolist()) == pixels.tolist()
    codes = torch.from_numpy(_cell_codes(op._lo, op._extent, *op._rays, op._offsets, pool.samples))
    assert codes.min() >= 0 and codes.max() < 64 and len(torch.unique(codes)) > 1
    key = codes[ordered] * pool.n_pixels + ordered  # non-decreasing: the cells, then the pixels' indices
    assert bool((key[1:] > key[:-1]).all())
    # a cell code by hand: the midpoint of a pixel's first segment, its 4×4×4 cell, bits interleaved
    s = pool.samples
    p = int((pool.offsets[s::s] > pool.offsets[:-1:s]).nonzero()[0])  # the first pixel with segments
    assert all(codes[q] == 0 for q in range(p))
    r = int(pool.offsets[p * s])
    rays = pool.rays.to(dtype=torch.float64)
    length = float(op._rays[4][r]) * float(op._rays[5][r])
    mid = rays.origins[r] + (rays.t_near[r] + length / 2) * rays.directions[r]
    lo, hi = torch.tensor(micro["lo"], dtype=torch.float64), torch.tensor(micro["hi"], dtype=torch.float64)
    cell = ((mid - lo) / (hi - lo) * 4).long().clamp(0, 3)
    code = sum(((int(cell[a]) >> b) & 1) << (3 * b + a) for b in range(2) for a in range(3))
    assert int(codes[p]) == code


def test_forward_and_adjoint_follow_the_pixels_order(micro):
    """A x in another order is A x permuted, bit for bit; Aᵀ y depends on the order only by rounding."""
    op = _projector(micro, "numba")
    pixels = torch.arange(micro["pool"].n_pixels)
    ordered = op.locality_order(pixels[::3])
    x = _grid((7, 6, 5), 4).float()
    by_index = op.forward(x, pixels)
    assert torch.equal(op.forward(x, ordered), by_index[ordered])
    y = torch.rand(len(pixels), generator=torch.Generator().manual_seed(5))
    back = op.adjoint(y[ordered], ordered)
    expected = op.adjoint(y[ordered.sort().values], ordered.sort().values)
    assert torch.allclose(back, expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
    assert torch.equal(_projector(micro, "torch").locality_order(ordered.flip(0)), ordered.flip(0))
