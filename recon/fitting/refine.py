"""Self-calibration inside the fit loop: the optics refined jointly with the density (``--refine``).

The fit traces the batch of each step through learnable optics (:class:`calibration.selfcal.SelfCalibration`,
float64, a prior toward the run's system) instead of gathering it from the static ray pool, and
takes an Adam step on the optical parameters beside the density's. At the end the ray pool is
traced again through the refined optics, so the outputs are those of the refined instrument.
Writing ``refined_system.toml`` and ``refinement.json`` is the fit job's (:mod:`recon.jobs.fit`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from calibration.model import PriorConfig, parse_fit_groups
from calibration.selfcal import SelfCalibration
from optics.system import System
from recon.fitting.config import FitConfig
from recon.fitting.data import FitData
from recon.fitting.raypool import RayPool, boost_for_fit, build_ray_pool, rays_per_sample
from recon.model.render import RayBatch, compact_rays

__all__ = ["Refinement"]


@dataclass
class Refinement:
    """The learnable optics of a fit, their optimiser, and the (u, v) and camera of every pixel."""

    module: torch.nn.Module
    optim: torch.optim.Optimizer
    pixel_uv: torch.Tensor
    pixel_camera: torch.Tensor

    @classmethod
    def start(cls, data: FitData, cfg: FitConfig, n_usable: int, device) -> Refinement:
        """Parametrised optics (float64) of ``cfg.refine``'s groups with their prior, and Adam."""
        module = SelfCalibration(data.system, parse_fit_groups(cfg.refine, where="fit --refine"),
                                 prior=PriorConfig(), n_pixels=n_usable)
        params = [p for p in module.parameters() if p.requires_grad]
        optim = torch.optim.Adam(params, lr=cfg.refine_lr)
        uv = torch.cat([v.pixel_coords() for v in data.views]).to(device)
        cams = torch.cat([torch.full((v.roi[2] * v.roi[3],), v.camera, dtype=torch.long) for v in data.views])
        return cls(module, optim, uv, cams.to(device))

    def batch(self, pixels: torch.Tensor, samples: int, gen) -> tuple[torch.Tensor, RayBatch]:
        """Trace ``pixels`` through the current optics; returns the pixels in traced order and rays."""
        traced, order = self.module.trace(self.pixel_uv[pixels], self.pixel_camera[pixels], samples,
                                          generator=gen)
        return pixels[order], compact_rays(traced)

    def finish(self, data: FitData, cfg: FitConfig, log) -> tuple[System, dict, RayPool]:
        """The refined system, a record of what changed, and the pool traced through the refined optics."""
        with torch.no_grad():
            refined = self.module.optics()
        record = {"refine": cfg.refine, "warmup_steps": cfg.refine_warmup, "lr": cfg.refine_lr,
                  "prior": dict(self.module.optics.prior.__dict__), "changes": self.module.optics.changes()}
        data = replace(data, system=refined.to(data.system.dtype))
        per_sample = rays_per_sample(data, cfg.defocused_rays)
        pool = build_ray_pool(data, samples=cfg.pool_samples, seed=cfg.seed, rays_per_sample=per_sample,
                              progress=log, sampling=cfg.pool_sampling)
        pool = boost_for_fit(pool, data, cfg, per_sample, progress=log)
        return refined, record, pool
