r"""TensoRF's vector–matrix (VM) decomposition of the density, a factorised grid.

Chen, Xu, Geiger, Yu & Su, "TensoRF: Tensorial Radiance Fields", ECCV 2022 (arXiv:2203.09517).

The density tensor is a sum of ``R`` components per mode, each a vector along one axis times a
matrix over the other two (the paper's Eq. 4, its density branch):

.. math::

    \mathrm{raw}(x, y, z) = \sum_{r=1}^{R} \big[ v^Z_r(z)\, M^{XY}_r(x, y)
        + v^Y_r(y)\, M^{XZ}_r(x, z) + v^X_r(x)\, M^{YZ}_r(y, z) \big] + s

with ``density = density_scale · act(raw)`` (:mod:`recon.model.fields.base`). The modes pair as
the authors' code pairs them (planes over (x, y), (x, z), (y, z) with lines along z, y, x); each
vector and matrix holds ``n`` samples per axis spanning the box from face to face (``grid_sample``
with ``align_corners=True``, as in their code): linear interpolation along a vector, bilinear
over a matrix. Parameters: ``R Σ (n_a n_b + n_c)`` over the modes — 0.8 M for R = 16 at 128 per
axis, against 2.1 M for a 128³ voxel grid.

As in the paper: every vector and matrix starts as 0.1 × a standard normal draw; ``R`` = 16 per
mode (its density default). Choices the paper leaves open or that differ here: ``s`` is a fixed
shift (the paper's ``density_shift``, −10 before a softplus) set so that ``act(raw)`` averages
1 over the box at the start, as every field of this package starts at ``init_density``; the
grid resolution is fixed (``tensorf_resolution``, default 128 per axis: about the object-space
pixel in run042's 2.4 mm box) where the paper grows it from 128³ to 300³ voxels during training;
the paper's L1 and total-variation losses on the factors are not added (the fit's own ``tv_weight``
and ``sparsity_weight`` act on the density); no appearance branch (a density has no colour).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recon.model.fields.base import Field, field_generator
from recon.model.fields.config import voxel_shape

__all__ = ["TENSORF_MODES", "TensoRFField"]

#: ((plane axes a, b), line axis c) of the three modes, axes 0, 1, 2 = x, y, z (TensoRF's
#: ``matMode`` and ``vecMode``).
TENSORF_MODES = (((0, 1), 2), ((0, 2), 1), ((1, 2), 0))


class TensoRFField(Field):
    """Vector–matrix factorised density (module docstring).

    ``state_dict`` keys: ``box_min_mm``, ``box_max_mm``, ``density_scale``, ``shift``,
    ``planes.{m}`` (1, R, n_b, n_a) and ``lines.{m}`` (1, R, n_c, 1) for the modes m of
    :data:`TENSORF_MODES`.
    """

    kind = "tensorf"

    def __init__(
        self,
        box_min_mm: Sequence[float],
        box_max_mm: Sequence[float],
        *,
        rank: int = 16,
        resolution: int | tuple[int, int, int] = 128,
        init_scale: float = 0.1,
        activation: str = "softplus",
        init_density: float = 1.0,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(box_min_mm, box_max_mm, activation=activation, init_density=init_density)
        if rank < 1:
            raise ValueError(f"TensoRFField: rank must be ≥ 1, got {rank}")
        nz, ny, nx = voxel_shape(resolution)
        n = (nx, ny, nz)
        if min(n) < 2:
            raise ValueError(f"TensoRFField: need at least 2 samples per axis, got {n} (x, y, z)")
        self.rank, self.resolution = int(rank), n
        gen = field_generator(seed, 6)
        self.planes = nn.ParameterList()
        self.lines = nn.ParameterList()
        for (a, b), c in TENSORF_MODES:
            self.planes.append(nn.Parameter(init_scale * torch.randn(1, rank, n[b], n[a], generator=gen)))
            self.lines.append(nn.Parameter(init_scale * torch.randn(1, rank, n[c], 1, generator=gen)))
        self.register_buffer("shift", torch.zeros(()))
        self.to(device if device is not None else "cpu")
        self._centre_output(self.shift, seed)

    def components(self, u: torch.Tensor) -> torch.Tensor:
        """(3, R, N): each mode's vector times matrix per component at the points u (N, 3) in [0, 1]^3."""
        p = (2 * u - 1).to(self.planes[0].dtype)
        out = []
        for ((a, b), c), plane, line in zip(TENSORF_MODES, self.planes, self.lines, strict=True):
            # grid_sample's (x, y) index (width, height): a plane's (n_a, n_b), a line's (1, n_c)
            at_plane = p[:, [a, b]].view(1, -1, 1, 2)
            at_line = torch.stack([torch.zeros_like(p[:, c]), p[:, c]], dim=-1).view(1, -1, 1, 2)
            m = F.grid_sample(plane, at_plane, mode="bilinear", padding_mode="border", align_corners=True)
            v = F.grid_sample(line, at_line, mode="bilinear", padding_mode="border", align_corners=True)
            out.append((m * v).view(self.rank, -1))
        return torch.stack(out)

    def raw(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 3) in [0, 1]^3 -> (N,) the sum of every mode's components, plus the shift."""
        return self.components(u).sum(dim=(0, 1)) + self.shift

    def extra_repr(self) -> str:
        """Adds the rank and resolution to the base description."""
        return f"{super().extra_repr()}, rank={self.rank}, resolution={self.resolution}"
