"""Projections of a volume from directions around an axis (a turntable): maximum intensity or emission.

Frame k looks along the direction at angle ``θ_k = 360° k / n`` about the turntable axis (z by
default, the dome's axis): for θ = 0 the viewer looks along +y with x to the right and the axis up,
and θ turns the viewing direction counter-clockwise seen from +axis (right-handed). Each pixel is
the maximum (``mode="mip"``) or the integral (``mode="emission"``: the column density, what a camera
sees of an optically thin, self-luminous cloud; the density's unit times mm) of the trilinearly
interpolated density along its line of sight, sampled every voxel (the image's pixels are voxels
too: a feature of 1–2 voxels may show 10–15 % below its peak); the image covers the volume's
circumscribed cylinder, so every frame has the same size and scale (mm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from recon.io.volume import Volume

__all__ = ["MODES", "TurntableFrame", "turntable"]

_AXES = {"x": 0, "y": 1, "z": 2}
#: What a frame's pixel is: the largest density on its line of sight, or the density's integral along it.
MODES = ("mip", "emission")


@dataclass(frozen=True)
class TurntableFrame:
    """One projection: its angle, the image (rows along the axis, top = +axis) and its extent in mm.

    Attributes:
        angle_deg: the viewing direction's angle about the axis.
        image: (rows, columns) maximum density (or column density) along each line of sight.
        extent_mm: (left, right, bottom, top) of the image, mm (matplotlib's ``extent``): the
            horizontal coordinate along the frame's right direction through the volume's centre,
            the vertical one along the axis.
    """

    angle_deg: float
    image: np.ndarray
    extent_mm: tuple[float, float, float, float]


def turntable(volume: Volume, frames: int = 24, axis: str = "z", chunk: int = 1 << 22, mode: str = "mip"
              ) -> list[TurntableFrame]:
    """``frames`` projections at equal angles about ``axis``, of the kind ``mode`` (module docstring).

    Raises:
        ValueError: ``frames`` < 1, an unknown axis or mode.
    """
    if mode not in MODES:
        raise ValueError(f"turntable: mode must be one of {MODES}, got {mode!r}")
    if frames < 1:
        raise ValueError(f"turntable: frames must be ≥ 1, got {frames}")
    if axis not in _AXES:
        raise ValueError(f"turntable: axis must be x, y or z, got {axis!r}")
    data = torch.from_numpy(np.ascontiguousarray(volume.data, dtype=np.float32))
    nz, ny, nx = data.shape
    spacing = np.asarray(volume.voxel_size_mm, dtype=np.float64)  # (x, y, z)
    origin = np.asarray(volume.origin_mm, dtype=np.float64)
    counts = np.array([nx, ny, nz])
    centre = origin + spacing * (counts - 1) / 2
    half = spacing * counts / 2  # half extent of the box the voxels tile
    a = _AXES[axis]
    # the turntable's frame: the axis and two directions across it, right-handed (u × v = axis)
    u0, v0 = (i for i in range(3) if i != a)
    radius = float(np.hypot(half[u0], half[v0]))
    step = float(spacing.min())
    across = np.arange(-radius + step / 2, radius, step)
    along = np.arange(-half[a] + step / 2, half[a], step)[::-1]  # top row = +axis
    depth = np.arange(-radius + step / 2, radius, step)
    out = []
    for k in range(frames):
        theta = 2 * math.pi * k / frames
        right = np.zeros(3)
        right[u0], right[v0] = math.cos(theta), math.sin(theta)
        view = np.zeros(3)
        view[u0], view[v0] = -math.sin(theta), math.cos(theta)
        up = np.zeros(3)
        up[a] = 1.0
        image = np.zeros((len(along), len(across)), dtype=np.float32)
        rows_per_chunk = max(1, chunk // (len(across) * len(depth)))
        for r0 in range(0, len(along), rows_per_chunk):
            w = along[r0:r0 + rows_per_chunk]
            pts = (centre + w[:, None, None, None] * up + across[None, :, None, None] * right
                   + depth[None, None, :, None] * view)  # (R, C, D, 3) mm, (x, y, z)
            unit = (pts - centre) / half  # grid_sample's [-1, 1] over the box the voxels tile
            grid = torch.from_numpy(unit.astype(np.float32)).reshape(1, -1, 1, 1, 3)
            values = F.grid_sample(data[None, None], grid, mode="bilinear", padding_mode="zeros",
                                   align_corners=False).reshape(len(w), len(across), len(depth))
            image[r0:r0 + len(w)] = (values.amax(-1) if mode == "mip" else values.sum(-1) * step).numpy()
        out.append(TurntableFrame(360.0 * k / frames, image, (-radius, radius, -half[a], half[a])))
    return out
