"""What a run holds, and whether it looks usable: per-view statistics, a table, a contact sheet.

Backs ``recon inspect RUN/`` (the command line lives in :mod:`recon.cli`). Statistics are in
photoelectrons (e⁻) per pixel over the usable pixels of all shots (:mod:`recon.io.run` masks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

from recon.errors import ConfigError
from recon.io.run import Run, RunView
from recon.io.sensor import SensorSpec, as_sensor_spec

__all__ = [
    "MASKED_WARN",
    "SATURATED_WARN",
    "SNR_WARN",
    "ViewStats",
    "fit_blockers",
    "inspect_run",
    "view_stats",
]


# Thresholds of the warnings in ViewStats.warnings.
SATURATED_WARN = 0.001  # fraction of pixels


SNR_WARN = 5.0


MASKED_WARN = 0.05


@dataclass(frozen=True)
class ViewStats:
    """Statistics of one view (photoelectrons per pixel, usable pixels of all shots).

    Attributes:
        name, camera, roi: the view's, as in :class:`~recon.io.run.RunView`.
        frames: shots K.
        min_e: smallest value, e⁻.
        max_e: largest value, e⁻.
        mean_e: mean value, e⁻.
        saturated_fraction: fraction of pixels (all shots) at the top of the ADC range.
        masked_fraction: fraction of pixels not usable (saturated, NaN, bad dark).
        background_e: background per pixel, e⁻: median of the usable pixels in a border of
            width ``max(1, min(h, w) // 16)``.
        signal_e: signal above the background summed over the view, e⁻ per shot.
        snr: signal-to-noise ratio of that sum, ``signal / sqrt(Σ max(e, 0) + n·σ²_eff)``
            per shot, with σ²_eff the read variance times ``1 + 1/dark_pages``; NaN when the
            noise is 0.
        warnings: short remarks on problems (saturation, low SNR, many masked pixels).
        clipped_fraction: fraction of pixels clipped at 0 ADU (censored values: the fit counts
            them as "below half an ADU", :mod:`recon.model.loss`).
    """

    name: str
    camera: int
    roi: tuple[int, int, int, int]
    frames: int
    min_e: float
    max_e: float
    mean_e: float
    saturated_fraction: float
    masked_fraction: float
    background_e: float
    signal_e: float
    snr: float
    warnings: tuple[str, ...] = ()
    clipped_fraction: float = 0.0

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        out = asdict(self)
        out["roi"] = list(self.roi)
        out["warnings"] = list(self.warnings)
        return out


def _border(h: int, w: int) -> torch.Tensor:
    b = max(1, min(h, w) // 16)
    border = torch.zeros(h, w, dtype=torch.bool)
    border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
    return border


def view_stats(view: RunView, sensor: object) -> ViewStats:
    """Statistics of one view (see :class:`ViewStats`).

    Args:
        view: a loaded view.
        sensor: its camera's sensor numbers (``read_noise_e`` is used).
    """
    spec = as_sensor_spec(sensor)
    e = view.electrons.to(torch.float64)  # (K, h, w)
    mask = view.mask
    k, h, w = e.shape
    usable = e[mask]
    n = mask.numel()
    if usable.numel():
        lo, hi, mean = float(usable.min()), float(usable.max()), float(usable.mean())
    else:
        lo = hi = mean = math.nan
    border = _border(h, w).expand(k, h, w) & mask
    ring = e[border]
    background = float(ring.median()) if ring.numel() else (float(usable.median()) if usable.numel() else 0.0)
    var_read = spec.read_noise_e**2 * (1.0 + (1.0 / view.dark_pages if view.dark_pages else 0.0))
    signal_k = ((e - background) * mask).sum(dim=(1, 2))  # (K,)
    noise_k = torch.sqrt((e.clamp_min(0) * mask).sum(dim=(1, 2)) + mask.sum(dim=(1, 2)) * var_read)
    signal = float(signal_k.mean())
    snr_k = torch.where(noise_k > 0, signal_k / noise_k.clamp_min(1e-300), torch.full_like(noise_k, math.nan))
    snr = float(snr_k.mean())
    saturated = float(view.saturated.sum()) / n
    censored = float(view.censored.sum()) / n if view.censored is not None else 0.0
    masked = float((~mask).sum()) / n - censored  # clipped frames are censored values, not lost
    warnings = []
    if saturated > SATURATED_WARN:
        warnings.append(f"{saturated:.1%} saturated: lower the exposure or the atom number")
    if masked - saturated > MASKED_WARN:
        other = masked - saturated
        warnings.append(f"{other:.1%} of pixels unusable besides saturation (NaN, bad dark)")
    if view.dark_clipped > 0:
        warnings.append(f"its dark frame is clipped at 0 ADU in {view.dark_clipped:.0%} of its values, so "
                        "it overestimates the black level and biases the faint light low; drop 'dark' from "
                        "run.toml and rely on the sensor's offset_adu, or raise the camera's black level")
    if not snr >= SNR_WARN:
        warnings.append(f"SNR {snr:.1f}: the view barely sees the object")
    return ViewStats(
        view.name,
        view.camera,
        tuple(view.roi),
        k,
        lo,
        hi,
        mean,
        saturated,
        masked,
        background,
        signal,
        snr,
        tuple(warnings),
        censored,
    )


def inspect_run(run: Run, sensor: object | None = None) -> list[ViewStats]:
    """Statistics of every view of a run, in file order.

    Args:
        run: a loaded run.
        sensor: sensor numbers (one for every camera, or a sequence/mapping by camera); None
            uses those the run was loaded with (``run.sensors``).

    Raises:
        ConfigError: no sensor numbers for a view's camera.
    """
    if sensor is None:
        sensors: Mapping[int, SensorSpec] = run.sensors
    elif isinstance(sensor, Mapping):
        sensors = {int(c): as_sensor_spec(s) for c, s in sensor.items()}
    elif isinstance(sensor, Sequence):
        sensors = {i: as_sensor_spec(s) for i, s in enumerate(sensor)}
    else:
        one = as_sensor_spec(sensor)
        sensors = {v.camera: one for v in run.views}
    out = []
    for v in run.views:
        if v.camera not in sensors:
            raise ConfigError(f"inspect_run: no sensor numbers for camera {v.camera} (view {v.name})")
        out.append(view_stats(v, sensors[v.camera]))
    return out


def fit_blockers(stats: Sequence[ViewStats]) -> list[str]:
    """What in a run's statistics makes a fit meaningless (each a one-line reason with its fix).

    A view every usable pixel of which lies below zero photoelectrons holds frames below their
    dark (or offset): light never makes a pixel negative on average, and read noise is symmetric,
    so such a view comes from a dark frame or offset that does not belong to it. A run whose
    views hold no light at all in sum has nothing to fit.
    """
    out = [f"view '{s.name}': every usable pixel lies below its dark (largest {s.max_e:.3g} e⁻); its dark "
           "frame or offset does not belong to these frames" for s in stats if s.max_e < 0]
    finite = [s for s in stats if math.isfinite(s.mean_e)]
    if not out and finite and sum(s.mean_e for s in finite) <= 0:
        out.append("the views hold no light above their dark in sum (mean e⁻ per pixel "
                   f"{', '.join(f'{s.mean_e:.3g}' for s in finite)})")
    return out
