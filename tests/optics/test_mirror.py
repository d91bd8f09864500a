import torch

from optics.mirror import householder, reflect_directions, reflect_points
from optics.rays import normalize


def test_householder_squares_to_identity_and_is_improper():
    n = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = householder(n)
    eye = torch.eye(3, dtype=torch.float64).expand(10, 3, 3)
    assert torch.allclose(h @ h, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(h), -torch.ones(10, dtype=torch.float64))


def test_reflecting_twice_is_identity_and_matches_householder():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 4, 3, dtype=torch.float64, generator=g)
    c = torch.randn(3, dtype=torch.float64, generator=g)
    n = torch.randn(3, dtype=torch.float64, generator=g)
    assert torch.allclose(reflect_points(reflect_points(x, c, n), c, n), x, atol=1e-12)
    # x' = H x + 2 δ n with δ = n·c
    u = normalize(n)
    expected = x @ householder(n).T + 2 * (u @ c) * u
    assert torch.allclose(reflect_points(x, c, n), expected, atol=1e-12)
    d = normalize(x)
    assert torch.allclose(reflect_directions(reflect_directions(d, n), n), d, atol=1e-12)
    assert torch.allclose(reflect_directions(d, n).norm(dim=-1), torch.ones(5, 4, dtype=torch.float64))
