"""Primitives: characteristic functions against quadrature and their hard-edge limits."""

import math

import numpy as np
import pytest
import torch

from recon.simulation.primitives import Box, Donut, Gaussian, Sphere

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
