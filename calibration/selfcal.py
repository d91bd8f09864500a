"""Self-calibration: refine optical parameters jointly with the density during a fit.

A density fit normally traces every pixel once through fixed optics. With refinement the
pixels of each step's batch are traced afresh through the parametrised instrument
(:class:`calibration.model.OpticalParameters`), so the data term's gradient reaches the mirror
tilts and offsets (and the camera pose and focus, when asked). The prior toward the given
system is the Gaussian of :meth:`OpticalParameters.prior_loss`, weighted as one more term of the
negative log-likelihood of all the data: the fit's data loss is twice the mean negative
log-likelihood per pixel, so the prior enters as ``2 · prior / n_pixels``. Refinement starts
after a warm-up on the density alone (REFERENCE §7: self-calibration works from near the truth,
with a prior, coarse to fine).
"""

from __future__ import annotations

import torch
from torch import nn

from calibration.model import OpticalParameters, PriorConfig
from optics.system import System
from optics.trace import TracedRays, sample_pixel_samples, trace_pixels

__all__ = ["SelfCalibration"]


class SelfCalibration(nn.Module):
    """The learnable instrument of a fit and the tracing of pixel batches through it.

    Args:
        system: the given (nominal) instrument.
        groups: parameter groups to refine (``mirrors``, ``pose``, ``focus``).
        prior: σ of the prior toward ``system``.
        n_pixels: usable pixels of the fit (weights the prior against the mean data loss).
    """

    def __init__(self, system: System, groups: tuple[str, ...], *, prior: PriorConfig, n_pixels: int):
        super().__init__()
        self.optics = OpticalParameters(system, groups, prior=prior)
        self.n_pixels = max(int(n_pixels), 1)

    def system(self, dtype: torch.dtype = torch.float32, device=None) -> System:
        """The current instrument, differentiable with respect to the parameters."""
        return self.optics().to(dtype, device)

    def prior_term(self) -> torch.Tensor:
        """() the prior on the scale of the fit's data loss: ``2 · ½Σz² / n_pixels``."""
        return 2.0 * self.optics.prior_loss() / self.n_pixels

    def trace(
        self,
        pixels_uv: torch.Tensor,
        cameras: torch.Tensor,
        samples: int,
        *,
        generator: torch.Generator,
    ) -> tuple[TracedRays, torch.Tensor]:
        """Trace a batch of pixels through the current instrument.

        Args:
            pixels_uv: (B, 2) full-sensor pixel positions, px.
            cameras: (B,) camera index of each pixel.
            samples: sub-pixel × aperture samples per pixel (fresh random ones).
            generator: CPU random generator of the samples.

        Returns:
            traced: segments (B', S, P) of the pixels, grouped by camera.
            order: (B',) index into the batch of each traced pixel.
        """
        device, dtype = pixels_uv.device, pixels_uv.dtype
        system = self.system(dtype, device)
        parts, orders = [], []
        for cam in torch.unique(cameras).tolist():
            idx = (cameras == cam).nonzero(as_tuple=True)[0]
            sub, ap = sample_pixel_samples(len(idx), samples, generator=generator, dtype=dtype)
            parts.append(
                trace_pixels(
                    system, pixels_uv[idx], camera=int(cam), subpixel=sub.to(device), aperture=ap.to(device)
                )
            )
            orders.append(idx)
        if len(parts) == 1:
            return parts[0], orders[0]
        fields = TracedRays.__dataclass_fields__
        cat = {f: torch.cat([getattr(p, f) for p in parts]) for f in fields if f != "paths"}
        return TracedRays(**cat, paths=parts[0].paths), torch.cat(orders)
