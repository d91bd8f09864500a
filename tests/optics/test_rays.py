import pytest
import torch

from optics.rays import (
    intersect_box,
    intersect_disk,
    intersect_plane,
    intersect_rectangle,
    normalize,
)


@pytest.mark.parametrize("batch", [(), (1,), (2, 3)])
def test_box_chord_shapes_and_values(batch):
    o = torch.tensor([-5.0, 0.2, 0.1]).expand(*batch, 3)
    d = torch.tensor([1.0, 0.0, 0.0]).expand(*batch, 3)
    t0, t1, ok = intersect_box(o, d, torch.full((3,), -1.0), torch.full((3,), 1.0))
    assert t0.shape == batch and ok.all()
    assert torch.allclose(t0, torch.full(batch, 4.0)) and torch.allclose(t1, torch.full(batch, 6.0))


def test_box_miss_and_parallel_and_inside():
    lo, hi = torch.full((3,), -1.0), torch.full((3,), 1.0)
    o = torch.tensor([[-5.0, 2.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    t0, t1, ok = intersect_box(o, d, lo, hi)
    assert ok.tolist() == [False, True, False]
    assert t0[1] == 0.0 and t1[1] == 1.0
    assert torch.isfinite(t0).all() and torch.isfinite(t1).all()


def test_plane_parallel_is_invalid_without_nan_gradients():
    o = torch.zeros(2, 3, requires_grad=True)
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    t, ok = intersect_plane(o, d, torch.tensor([0.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 1.0]))
    assert ok.tolist() == [False, True] and t[1] == 2.0
    t.sum().backward()
    assert torch.isfinite(o.grad).all()


def test_disk_and_rectangle_apertures():
    o = torch.tensor([[0.9, 0.0, -1.0], [1.1, 0.0, -1.0], [0.0, 0.45, -1.0], [0.0, 0.55, -1.0]])
    d = torch.tensor([0.0, 0.0, 1.0]).expand(4, 3)
    c, n = torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])
    _, ok = intersect_disk(o, d, c, n, 1.0)
    assert ok.tolist() == [True, False, True, True]
    _, ok = intersect_rectangle(o, d, c, n, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 0.5]))
    assert ok.tolist() == [True, False, True, False]


def test_normalize_zero_stays_zero():
    assert torch.equal(normalize(torch.zeros(3)), torch.zeros(3))
