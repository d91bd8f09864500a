r"""A 3D Gaussian's exact line integrals over a pixel's segments, and their derivatives (numba).

EM's start (:func:`recon.fitting.gaussian.fit_gaussian_and_gains`) fits a Gaussian to the photon counts
by L-BFGS: every evaluation integrates it along each of the chosen pixels' pooled segments
(hundreds of thousands) and differentiates the likelihood with respect to its ten parameters.
Written as torch operations on float64 vectors that is some fifty passes over memory a step; here
one compiled pass per step computes, for each pixel p, the sum over its segments r

.. math::

    S_p = \sum_r e_r J_r, \qquad
    J_r = \int_0^{T_r} \exp\bigl(-\tfrac12 (q_r + t d_r)^T P (q_r + t d_r)\bigr)\,dt

(``P = Σ⁻¹``, ``q_r`` the segment's entry point minus the centre μ, ``e_r`` its emission weight)
together with its derivatives with respect to the six entries of P and the centre: the
likelihood's gradient (:class:`GaussianPixelSums`, a custom autograd function) and the Fisher
information's per-pixel slopes come from the same pass.

With ``a = dᵀPd``, ``b = dᵀPq``, ``c = qᵀPq``, ``s = √(a/2)`` and ``m = b/a``:
``J = exp(−(c − b²/a)/2) · √(π/(2a)) · (erf(s(T + m)) − erf(s m))``, the same closed form as
:func:`recon.fitting.gaussian._gaussian_line_integrals` (the torch specification the kernel is tested
against) written from the segment's entry point rather than its far-away origin.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import torch

from recon.threads import numba_threads

__all__ = ["GaussianPixelSums", "P6_INDEX", "SegmentGeometry", "gaussian_pixel_sums", "pixel_sums_kernel"]

#: The six independent entries of the symmetric P, in the kernel's order: (0,0), (1,1), (2,2),
#: (0,1), (0,2), (1,2).
P6_INDEX = ((0, 1, 2, 0, 0, 1), (0, 1, 2, 1, 2, 2))

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


@nb.njit(parallel=True, fastmath=False, cache=True)
def pixel_sums_kernel(p6, mu, entry, directions, length, emission, first, last, sums, jac):
    """``sums[p] = Σ_r e_r J_r`` and ``jac[p] = Σ_r e_r ∂J_r/∂(P00, P11, P22, P01, P02, P12, μx, μy, μz)``.

    Args:
        p6: (6,) the entries of P = Σ⁻¹ (:data:`P6_INDEX`), float64.
        mu: (3,) the centre, mm.
        entry: (R, 3) each segment's first point, mm (float64, near the box: see the module).
        directions: (R, 3) unit directions.
        length: (R,) the segments' lengths T, mm.
        emission: (R,) their weights e.
        first: (P,) each pixel's first segment.
        last: (P,) one past its last (its segments are ``first[p] ≤ r < last[p]``).
        sums: (P,) written.
        jac: (P, 9) written.
    """
    for p in nb.prange(first.shape[0]):
        acc = 0.0
        g = np.zeros(9)
        for r in range(first[p], last[p]):
            dx, dy, dz = directions[r, 0], directions[r, 1], directions[r, 2]
            qx, qy, qz = entry[r, 0] - mu[0], entry[r, 1] - mu[1], entry[r, 2] - mu[2]
            # P d and P q
            pdx = p6[0] * dx + p6[3] * dy + p6[4] * dz
            pdy = p6[3] * dx + p6[1] * dy + p6[5] * dz
            pdz = p6[4] * dx + p6[5] * dy + p6[2] * dz
            pqx = p6[0] * qx + p6[3] * qy + p6[4] * qz
            pqy = p6[3] * qx + p6[1] * qy + p6[5] * qz
            pqz = p6[4] * qx + p6[5] * qy + p6[2] * qz
            a = dx * pdx + dy * pdy + dz * pdz
            b = dx * pqx + dy * pqy + dz * pqz
            c = qx * pqx + qy * pqy + qz * pqz
            s = math.sqrt(0.5 * a)
            m = b / a
            x1, x0 = s * (length[r] + m), s * m
            span = math.erf(x1) - math.erf(x0)
            ef = math.exp(-0.5 * (c - b * m)) * math.sqrt(0.5 * math.pi / a)  # E · F
            j = ef * span
            e = emission[r]
            acc += e * j
            # ∂J/∂c, ∂J/∂b, ∂J/∂a (module docstring's closed form, differentiated)
            g1, g0 = _TWO_OVER_SQRT_PI * math.exp(-x1 * x1), _TWO_OVER_SQRT_PI * math.exp(-x0 * x0)
            dj_dc = -0.5 * j
            dj_db = j * m + ef * (s / a) * (g1 - g0)
            dx1_da = s * (length[r] + m) / (2.0 * a) - s * m / a
            dx0_da = -s * m / (2.0 * a)
            dj_da = j * (-0.5 * m * m - 0.5 / a) + ef * (g1 * dx1_da - g0 * dx0_da)
            # a = dᵀPd, b = dᵀPq, c = qᵀPq: ∂/∂P_ij (off-diagonal entries count twice); q = entry − μ
            g[0] += e * (dj_da * dx * dx + dj_db * dx * qx + dj_dc * qx * qx)
            g[1] += e * (dj_da * dy * dy + dj_db * dy * qy + dj_dc * qy * qy)
            g[2] += e * (dj_da * dz * dz + dj_db * dz * qz + dj_dc * qz * qz)
            g[3] += e * (2.0 * dj_da * dx * dy + dj_db * (dx * qy + dy * qx) + 2.0 * dj_dc * qx * qy)
            g[4] += e * (2.0 * dj_da * dx * dz + dj_db * (dx * qz + dz * qx) + 2.0 * dj_dc * qx * qz)
            g[5] += e * (2.0 * dj_da * dy * dz + dj_db * (dy * qz + dz * qy) + 2.0 * dj_dc * qy * qz)
            # ∂b/∂μ = −P d, ∂c/∂μ = −2 P q
            g[6] -= e * (dj_db * pdx + 2.0 * dj_dc * pqx)
            g[7] -= e * (dj_db * pdy + 2.0 * dj_dc * pqy)
            g[8] -= e * (dj_db * pdz + 2.0 * dj_dc * pqz)
        sums[p] = acc
        for i in range(9):
            jac[p, i] = g[i]


def _float64(values) -> torch.Tensor:
    """``values`` as a float64 CPU tensor, detached."""
    return torch.as_tensor(values).detach().cpu().double()


class SegmentGeometry:
    """The chosen pixels' segments as the kernel reads them (float64 numpy, made once per fit).

    Args:
        origins, directions: (R, 3) the segments' origins and unit directions, mm.
        t_near, t_far: (R,) where each enters and leaves the box, mm.
        emission: (R,) their weights.
        pixel: (R,) each segment's pixel, 0 … n_pixels − 1, non-decreasing.
        n_pixels: the pixels.
    """

    def __init__(self, origins, directions, t_near, t_far, emission, pixel, n_pixels: int):
        pixel = torch.as_tensor(pixel).cpu()
        if len(pixel) > 1 and bool((pixel[1:] < pixel[:-1]).any()):
            raise ValueError("SegmentGeometry: the segments must be sorted by pixel")
        near, unit = _float64(t_near), _float64(directions).contiguous()
        self.entry = (_float64(origins) + near[:, None] * unit).numpy()
        self.directions = unit.numpy()
        self.length = (_float64(t_far) - near).clamp_min(0.0).numpy()
        self.emission = _float64(emission).contiguous().numpy()
        offsets = np.zeros(n_pixels + 1, dtype=np.int64)
        np.cumsum(np.bincount(pixel.numpy(), minlength=n_pixels), out=offsets[1:])
        self.first, self.last = offsets[:-1], offsets[1:]
        self.n_pixels = n_pixels


def gaussian_pixel_sums(p6: np.ndarray, mu: np.ndarray, geometry: SegmentGeometry
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(P,) ``S_p`` and (P, 9) its derivatives (:func:`pixel_sums_kernel`) at P's entries ``p6``, ``mu``."""
    sums = np.empty(geometry.n_pixels)
    jac = np.empty((geometry.n_pixels, 9))
    numba_threads()
    pixel_sums_kernel(np.ascontiguousarray(p6, dtype=np.float64), np.ascontiguousarray(mu, dtype=np.float64),
                      geometry.entry, geometry.directions, geometry.length, geometry.emission,
                      geometry.first, geometry.last, sums, jac)
    return sums, jac


class GaussianPixelSums(torch.autograd.Function):
    """``S, _ = GaussianPixelSums.apply(p6, mu, geometry)``: (P,) float64, differentiable in p6 and mu.

    The backward pass is the kernel's per-pixel derivatives (the second output, not differentiable)
    applied to the incoming gradient: one kernel pass gives the value and the gradient.
    """

    @staticmethod
    def forward(p6, mu, geometry):  # noqa: D102
        sums, jac = gaussian_pixel_sums(p6.detach().cpu().numpy(), mu.detach().cpu().numpy(), geometry)
        return torch.from_numpy(sums).to(p6.device), torch.from_numpy(jac).to(p6.device)

    @staticmethod
    def setup_context(ctx, inputs, output):  # noqa: D102
        _, jac = output
        ctx.mark_non_differentiable(jac)
        ctx.save_for_backward(jac)

    @staticmethod
    def backward(ctx, grad_sums, grad_jac):  # noqa: D102
        (jac,) = ctx.saved_tensors
        g = grad_sums @ jac
        return g[:6], g[6:], None
