"""Per-camera sensitivity: how much more or less light each camera records than the system file says.

Separate cameras differ in exposure, aperture, quantum efficiency and gain by tens of per cent
(a lab's four cameras disagreed by up to 4.6×); a fit that trusts the system file for all of
them cannot reconcile the views and distorts the cloud to make up the difference. The model of
a pixel i of camera c is ``λ_i = s_c (A x)_i``; the factors ``s`` and the density scale are
degenerate, so a *reference camera* (the first camera of the system file that has views) keeps
``s = 1``: the atom number is in its photometric scale (the run's ``photons_per_atom`` and the
system file's numbers for that camera hold), and every other camera's factor is relative to it.

Estimation (:func:`estimate_camera_sensitivity`): the data's 3D Gaussian (EM's start model,
:func:`recon.fitting.gaussian.fit_gaussian_and_gains`) fitted with one gain per camera. A camera's
total light is set by the atom number and how much of each atom's light it collects, and the
Gaussian carries how that collection varies over the cloud, so its gains do not depend on the
cloud's fine shape. The factors are then held fixed for the fit: they multiply the weights of
the camera's pooled segments (:func:`scaled_pool`), so every prediction — EM's updates, the
held-out checks, the renders and residuals — includes them.

Uncertainty: photon noise of the light totals only,
``(σ_s / s)² = V_c / S_c² + V_ref / S_ref²`` with ``S`` a camera's summed photoelectrons and ``V``
their variance ``Σ (S_i + K_i σ²)`` — a lower bound; a model that cannot describe the cloud
adds to it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from recon.fitting.config import SENSITIVITY_MODES
from recon.fitting.data import FitData
from recon.fitting.gaussian import fit_gaussian_and_gains
from recon.fitting.raypool import RayPool
from recon.model.loss import shift_variance

__all__ = ["CameraSensitivity", "estimate_camera_sensitivity", "fits_sensitivity",
           "scaled_pool"]


@dataclass(frozen=True)
class CameraSensitivity:
    """Fitted per-camera factors (the reference camera's is 1) and their photon-noise sd."""

    names: tuple[str, ...]
    factors: tuple[float, ...]
    sd: tuple[float, ...]
    reference: int

    def to_json(self) -> list[dict]:
        """One entry per camera with views: name, factor, sd, reference."""
        return [{"camera": n, "factor": f, "sd": s, "reference": i == self.reference}
                for i, (n, f, s) in enumerate(zip(self.names, self.factors, self.sd, strict=True))]

    def describe(self) -> str:
        """One line for the log."""
        parts = [f"{n} {f:.3f}" + (" (reference)" if i == self.reference else f" ± {s:.3f}")
                 for i, (n, f, s) in enumerate(zip(self.names, self.factors, self.sd, strict=True))]
        return "camera sensitivity (relative to the system file, fitted): " + ", ".join(parts)


def fits_sensitivity(mode: str, data: FitData) -> bool:
    """Whether a fit estimates per-camera factors: ``fit``, or ``auto`` with views from ≥ 2 cameras."""
    if mode not in SENSITIVITY_MODES:
        raise ValueError(f"camera_sensitivity must be one of {SENSITIVITY_MODES}, got {mode!r}")
    return mode == "fit" or (mode == "auto" and len({v.camera for v in data.views}) > 1)


def _pixel_cameras(data: FitData, pool: RayPool) -> tuple[torch.Tensor, list[int]]:
    """(n_pixels,) the index (into the returned list of cameras with views) of each pixel's camera."""
    cameras = sorted({v.camera for v in data.views})
    rank = torch.tensor([cameras.index(v.camera) for v in data.views], dtype=torch.long)
    return rank[pool.view_of_pixel.long().cpu()], cameras


def estimate_camera_sensitivity(data: FitData, pool: RayPool, train: torch.Tensor, *, atoms: float,
                                photons_per_atom: float, seed: int) -> CameraSensitivity:
    """Fit one factor per camera with views (the first keeps 1) with the data's Gaussian.

    Args:
        data: the fit's data (its views' cameras).
        pool: the ray pool, traced with the system file's photometry.
        train: (P,) the training pixels.
        atoms: the starting atom number of the Gaussian.
        photons_per_atom: Y.
        seed: seed of the Gaussian fit's pixel draw.
    """
    group, cameras = _pixel_cameras(data, pool)
    box = data.system.volume
    _, gains = fit_gaussian_and_gains(pool, train, box.min_mm.tolist(), box.max_mm.tolist(), atoms=atoms,
                                      photons_per_atom=photons_per_atom, groups=group, reference=0,
                                      seed=seed)
    var = shift_variance(pool.read_noise_e)
    g = group[train.cpu()]
    signal = torch.zeros(len(cameras), dtype=torch.float64).index_add_(
        0, g, pool.summed_electrons[train].double().cpu())
    counts = pool.summed_electrons[train].double().clamp_min(0) + pool.n_frames[train].double() * var
    variance = torch.zeros(len(cameras), dtype=torch.float64).index_add_(0, g, counts.cpu())
    rel2 = variance / signal.clamp_min(1e-30) ** 2
    factors = gains.tolist() if gains is not None else [1.0] * len(cameras)
    sd = [0.0] + [f * math.sqrt(float(rel2[i] + rel2[0])) for i, f in enumerate(factors)][1:]
    names = tuple(data.system.cameras[c].name for c in cameras)
    return CameraSensitivity(names, tuple(factors), tuple(sd), reference=0)


def scaled_pool(pool: RayPool, data: FitData, sensitivity: CameraSensitivity) -> RayPool:
    """The pool with each segment's weight multiplied by its camera's factor."""
    group, _ = _pixel_cameras(data, pool)
    factor = torch.tensor(sensitivity.factors, dtype=pool.rays.weights.dtype)[group]
    segment_pixel = (pool.rays.pixel // pool.samples).long().cpu()
    weights = pool.rays.weights * factor[segment_pixel].to(pool.rays.weights.device)
    return dataclasses.replace(pool, rays=dataclasses.replace(pool.rays, weights=weights))
