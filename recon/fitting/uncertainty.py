r"""Error bars from the data's own noise: the fit repeated on binomial-thinning halves of the photons.

``recon fit --uncertainty K`` (``FitConfig.uncertainty_splits``) splits the measured
photoelectrons of every pixel K times into two independent halves by binomial thinning
(:func:`recon.fitting.data.split_fit_data`, ``thinning``: each half has half the photons and is
fitted with half the photons per atom, so it estimates the same density) and fits each half as
the whole data was fitted, with its own ray pool (the half's seed). For every reported figure θ
(atoms, centroid, widths, and the fringe figures when asked) split k gives two estimates
``a_k, b_k``, and

.. math::

    \hat σ^2 = \frac1K \sum_k \left(\frac{a_k - b_k}2\right)^2 ,

the variance of one fit of all the data if an estimate's noise variance scales as one over the
photons: a half's variance is twice the whole's, ``var(a − b) = 4 var(θ)``. It holds the photon
noise as every stage of the fit propagates it (the start, the held-out stop, the voxel grid, the
pool's sampling of the pixels, the camera factors) — what the Cramér–Rao bound of a Gaussian
cloud leaves out — but no bias: a reconstruction that is off the truth by the same amount in
every half (a width set by the missing cone, a contrast lowered by the grid) is off by more than
its error bar. A half holds the read noise of a whole frame, so for faint, read-noise-dominated
views the estimate errs large.

K splits give K degrees of freedom: the 68 % interval is ``± t_K · σ̂`` with ``t_K`` Student's t
quantile at 0.8413 (:func:`interval_factor`: 1.84 for K = 1, 1.32 for 2, 1.20 for 3, 1.14 for 4).
The cost is 2K fits of half the photons each.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recon.analysis.fringes import fit_fringes
from recon.analysis.moments import cloud_metrics
from recon.errors import FitError, ReconError
from recon.fitting.config import FitConfig, field_factory
from recon.fitting.data import HALF_SEED_OFFSET, SPLIT_SEED_OFFSET, FitData, split_fit_data
from recon.fitting.loop import run_fit
from recon.io.volume import Volume
from recon.model.fields.base import sample_field

__all__ = ["figures", "interval_factor", "refit_uncertainty", "split_spread", "thinning_uncertainty"]

_ONE_SIGMA = 0.5 * (1.0 + math.erf(1.0 / math.sqrt(2.0)))  # 0.8413: the upper end of ±1 σ


def interval_factor(splits: int) -> float:
    """``t_K``: the 68.3 % interval is ± t_K σ̂ for σ̂ from K splits (Student's t, K dof)."""
    from scipy.stats import t

    return float(t.ppf(_ONE_SIGMA, splits))


def split_spread(pairs: list[tuple[dict[str, float], dict[str, float]]]) -> dict[str, float]:
    """σ̂ of each figure over K pairs of half estimates: ``sqrt(mean_k ((a_k − b_k) / 2)²)``.

    A figure whose name ends in ``_rad`` is a phase: its differences are taken modulo 2π (in
    −π … π). A figure missing or non-finite in some half has None.
    """
    names = dict.fromkeys(k for a, b in pairs for k in (*a, *b))
    out: dict[str, float] = {}
    for name in names:
        d = [(a.get(name), b.get(name)) for a, b in pairs]
        if any(x is None or y is None or not math.isfinite(x) or not math.isfinite(y) for x, y in d):
            out[name] = None
            continue
        diffs = [x - y for x, y in d]
        if name.endswith("_rad"):
            diffs = [math.remainder(v, 2 * math.pi) for v in diffs]
        out[name] = math.sqrt(sum((v / 2) ** 2 for v in diffs) / len(diffs))
    return out


def thinning_uncertainty(data: FitData, cfg: FitConfig, work: Path, *, splits: int,
                         fit_half: Callable[[FitData, FitConfig, Path], dict[str, float]],
                         say: Callable[[str], None] = lambda text: None) -> dict:
    """Fit ``splits`` binomial-thinning splits of ``data`` and return the figures' σ̂.

    Args:
        data: the run's data (the whole of it).
        cfg: the fit's settings (each half is fitted with them, at its own seed).
        work: a scratch directory (removed afterwards).
        splits: K ≥ 1.
        fit_half: ``fit_half(half_data, half_cfg, directory) -> {figure: value}``: fits a half and
            measures its figures as the whole fit's are measured.
        say: progress lines.

    Returns:
        ``method``, ``splits``, ``interval_factor`` (t_K) and ``sd`` ({figure: σ̂ or None}).

    Raises:
        FitError: a half's fit failed (the message says which).
    """
    if splits < 1:
        raise ValueError(f"thinning_uncertainty: splits must be ≥ 1, got {splits}")
    pairs = []
    try:
        for k in range(1, splits + 1):  # split k thins with seed + k · SPLIT_SEED_OFFSET; its half i
            # is fitted with seed + (2k + i) · HALF_SEED_OFFSET (a ray pool of its own, shared by every shot)
            halves, _ = split_fit_data(data, "thinning", cfg.seed + SPLIT_SEED_OFFSET * k)
            estimates = []
            for i, half in enumerate(halves, 1):
                say(f"uncertainty: split {k}/{splits}, half {i}/2")
                where = work / f"split{k}" / f"half{i}"
                where.mkdir(parents=True, exist_ok=True)
                half_cfg = dataclasses.replace(cfg, seed=cfg.seed + (2 * k + i) * HALF_SEED_OFFSET,
                                               uncertainty_splits=0)
                try:
                    estimates.append(fit_half(half, half_cfg, where))
                except FitError as err:
                    raise FitError(f"the uncertainty's split {k}, half {i} failed: {err}") from err
            pairs.append(tuple(estimates))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"method": "binomial thinning: each figure's spread between independent halves of the photons, "
                      "refitted",
            "splits": splits, "interval_factor": interval_factor(splits), "sd": split_spread(pairs)}


def figures(volume: Volume, fringes: bool) -> dict[str, float]:
    """The figures a fit reports, by name: atoms, centroid and widths (µm), and its fringes' when asked.

    The fringe figures (``phase_at_origin_rad``, ``period_um``, ``contrast``) only where fringes are
    detected. What :func:`refit_uncertainty` measures on each half.
    """
    m = cloud_metrics(volume)
    out = {"atoms": float(m["atoms"])}
    for axis, c, w in zip("xyz", m["centroid_mm"], m["width_mm"], strict=True):
        out[f"centroid_{axis}_um"], out[f"width_{axis}_um"] = 1e3 * float(c), 1e3 * float(w)
    if fringes:
        try:
            found = fit_fringes(volume)
        except ReconError:
            found = None
        if found is not None and found.detected:
            out.update(phase_at_origin_rad=found.phase_at_origin_rad, period_um=1e3 * found.period_mm,
                       contrast=found.contrast)
    return out


def refit_uncertainty(data: FitData, cfg: FitConfig, work: Path, grid, *, pool_cache=None,
                      say: Callable[[str], None] = lambda text: None) -> dict:
    """metrics.json's ``uncertainty``: :func:`thinning_uncertainty` of the fit's figures, and its seconds.

    Each half is fitted as the whole was (:func:`recon.fitting.loop.run_fit`, the same pool cache)
    and measured on the output ``grid`` (shape, origin, voxel) by :func:`figures`, with its camera
    factors where it fits them (``camera_<name>``).
    """
    shape, origin, voxel = grid

    def fit_half(half: FitData, half_cfg: FitConfig, where: Path) -> dict[str, float]:
        result = run_fit(half, half_cfg, where, make_field=field_factory, pool_cache=pool_cache)
        values = sample_field(result.field, shape, origin, voxel, result.device)
        out = figures(Volume(values.astype(np.float32), tuple(origin), tuple(voxel)), cfg.fringes)
        sensitivity = result.camera_sensitivity  # fitted per-camera factors (the reference's is 1)
        if sensitivity is not None:
            out.update({f"camera_{name}": factor for name, factor in
                        zip(sensitivity.names, sensitivity.factors, strict=True)})
        return out

    start = time.perf_counter()
    record = thinning_uncertainty(data, cfg, work, splits=cfg.uncertainty_splits, fit_half=fit_half, say=say)
    return {**record, "seconds": round(time.perf_counter() - start, 2)}
