r"""Bundle adjustment of the instrument from point-source spots.

Every exposure ``i`` of a point source at ``X_i`` gives one spot per view (path ``k``) with a
measured centroid ``z_ik`` and its standard error ``σ_ik``. The predicted centroid
``ĉ_ik(θ, X_i)`` is the aperture-averaged landing point through the parametrised instrument
(:class:`calibration.model.OpticalParameters`, :func:`optics.project.spot_centroids`). The
fit minimises

.. math::

    L(θ, X) = \tfrac12 \sum_{ik} \frac{\lVert ĉ_{ik}(θ, X_i) − z_{ik} \rVert^2}{σ_{ik}^2}
              + \tfrac12 \lVert z_θ \rVert^2

(the second term: the Gaussian prior toward the nominal values, parameters in units of their
prior σ) with L-BFGS in float64. Gauge: with known positions the target defines the world frame
(and the scale); with unknown positions the camera is held fixed (its pose is the gauge and
cannot be fitted), the positions are free and start from a triangulation through the nominal
instrument, and the overall scale about the lens — nearly a symmetry, which moves every mirror
along its normal by about the same amount — is fixed by holding the mean mirror offset at its
nominal value (REFERENCE §7). Offsets are then known relative to their mean only; tilts are not
affected.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from calibration.model import OpticalParameters, PriorConfig
from calibration.spots import Spot, SpotMissing, detect_spot
from optics.design import view_regions
from optics.errors import CalibrationError
from optics.project import aperture_pattern, spot_centroids, trace_point_to_sensor
from optics.system import System

__all__ = [
    "CalibrationConfig",
    "CalibrationResult",
    "Observations",
    "calibrate",
    "measure_spots",
    "parameter_uncertainty",
    "triangulate",
]


@dataclass(frozen=True)
class CalibrationConfig:
    """Settings of :func:`calibrate`.

    Attributes:
        fit: parameter groups (``mirrors``, ``pose``, ``focus``, ``distortion``).
        known_positions: use the recorded source positions (True) or fit them (False).
        prior: σ of the prior toward the nominal instrument.
        n_aperture: aperture samples per predicted spot.
        max_iterations: L-BFGS iterations at most.
        tolerance_px: stop when the step changes the RMS normalised residual by less than this.
        camera: camera index.
        uncertainty: also compute the parameters' standard errors (2 predictions per free scalar).
    """

    fit: tuple[str, ...] = ("mirrors",)
    known_positions: bool = True
    prior: PriorConfig = field(default_factory=PriorConfig)
    n_aperture: int = 512
    max_iterations: int = 400
    tolerance: float = 1e-12
    camera: int = 0
    uncertainty: bool = True


@dataclass(frozen=True)
class Observations:
    """Measured spots of a target set.

    Attributes:
        paths: (P,) path of each view column.
        names: (P,) view names.
        uv: (N, P, 2) measured centroids, px (NaN where not observed).
        sigma: (N, P) standard errors, px (inf where not observed).
        observed: (N, P) a spot was measured.
        positions_mm: (N, 3) recorded source positions, or None.
        skipped: why each unobserved (exposure, view) was left out: no spot in the region or
            one cut by its edge (a source whose image falls outside that view), or one with
            light on saturated or masked pixels.
    """

    paths: tuple[int, ...]
    names: tuple[str, ...]
    uv: torch.Tensor
    sigma: torch.Tensor
    observed: torch.Tensor
    positions_mm: torch.Tensor | None
    skipped: tuple[str, ...] = ()

    @property
    def n_positions(self) -> int:
        """Number of exposures N."""
        return self.uv.shape[0]


@dataclass
class CalibrationResult:
    """What :func:`calibrate` found.

    Attributes:
        system: the refined instrument (float64).
        model: the fitted parameters.
        positions_mm: (N, 3) positions used (recorded, or fitted).
        predicted_uv: (N, P, 2) predicted centroids, px.
        residual_uv: (N, P, 2) predicted − measured, px (0 where not observed).
        before_rms_px: per view, reprojection RMS with the nominal instrument (known positions;
            NaN with unknown positions, where the triangulated ones are used).
        after_rms_px: per view, reprojection RMS after the fit.
        rms_px: RMS over every observed spot coordinate after the fit.
        iterations: L-BFGS iterations.
        time_s: seconds spent fitting.
        losses: loss after each outer iteration.
        uncertainty: standard errors of the fitted parameters (:func:`parameter_uncertainty`),
            or None when not computed.
    """

    system: System
    model: OpticalParameters
    positions_mm: torch.Tensor
    predicted_uv: torch.Tensor
    residual_uv: torch.Tensor
    before_rms_px: dict
    after_rms_px: dict
    rms_px: float
    iterations: int
    time_s: float
    losses: list
    uncertainty: dict | None = None


def measure_spots(
    views: list[tuple[str, int, tuple[int, int, int, int], np.ndarray, np.ndarray]],
    nominal: System,
    *,
    positions_mm: torch.Tensor | None,
    bead_sigma_mm: float,
    camera: int = 0,
    gate_px: float = 150.0,
) -> Observations:
    """Detect the spot of every exposure in every view and assign it to its path.

    Args:
        views: (name, path, roi, electrons (N, h, w), mask (N, h, w)) of each view.
        nominal: the nominal instrument (sets the expected spot sizes and, with known positions,
            where each spot should be).
        positions_mm: (N, 3) recorded positions, or None.
        bead_sigma_mm: source σ (adds to the expected spot size).
        camera: camera index.
        gate_px: with known positions, a spot further than this from its nominal prediction is
            an error (wrong view, wrong exposure order or positions).

    A view in which an exposure has no usable spot (the source's image falls outside the view's
    region or across its edge, or puts light on saturated or masked pixels) simply lacks that
    observation; the reason is kept in :attr:`Observations.skipped`.

    Raises:
        CalibrationError: a view without a spot in any exposure; ambiguous spots; a spot far
            from where the nominal instrument puts it.
    """
    sys64 = nominal.to(torch.float64)
    regions = {r.path: r for r in view_regions(sys64, camera)}
    pitch = sys64.cameras[camera].sensor.pixel_pitch_mm
    m = float(sys64.cameras[camera].lens.magnification)
    n = views[0][3].shape[0]
    n_p = len(views)
    uv = torch.full((n, n_p, 2), math.nan, dtype=torch.float64)
    sigma = torch.full((n, n_p), math.inf, dtype=torch.float64)
    pred = None
    extent = None
    skipped: list[str] = []
    if positions_mm is not None:
        ap = aperture_pattern(256)
        pred = torch.zeros(n, n_p, 2, dtype=torch.float64)
        extent = torch.zeros(n, n_p, dtype=torch.float64)
        with torch.no_grad():
            for j, (_, path, _, _, _) in enumerate(views):
                s = trace_point_to_sensor(sys64, positions_mm.to(torch.float64), path, ap, camera=camera)
                c, f = s.centroids()
                pred[:, j] = c
                d = (s.pixels_uv - c.unsqueeze(-2)).norm(dim=-1)
                extent[:, j] = torch.where(s.valid, d, torch.zeros_like(d)).amax(-1) * 2.0
    for j, (name, path, roi, electrons, mask) in enumerate(views):
        if electrons.shape[0] != n:
            raise CalibrationError(
                f"calibrate: view {name} has {electrons.shape[0]} exposures, "
                f"{views[0][0]} has {n}; every view needs one page per position"
            )
        for i in range(n):
            if extent is not None:
                diameter = float(extent[i, j])
            else:
                diameter = regions[path].blur_px * 1.1 + 10.0
            diameter += 4.0 * bead_sigma_mm * m / pitch
            try:
                spot: Spot = detect_spot(
                    electrons[i],
                    roi,
                    expected_diameter_px=max(diameter, 2.0),
                    mask=mask[i],
                    where=f"view {name}, exposure {i}",
                )
            except SpotMissing as err:
                skipped.append(str(err).removeprefix("calibrate: "))
                continue
            if pred is not None:
                off = math.hypot(spot.u - float(pred[i, j, 0]), spot.v - float(pred[i, j, 1]))
                if off > gate_px:
                    raise CalibrationError(
                        f"calibrate: the spot of exposure {i} in view {name} is {off:.0f} px from where "
                        f"the nominal system puts it (gate {gate_px:g} px); check the positions in "
                        "target.toml, the exposure order and the system file"
                    )
            uv[i, j] = torch.tensor([spot.u, spot.v], dtype=torch.float64)
            sigma[i, j] = spot.sigma_px
        if not torch.isfinite(sigma[:, j]).any():
            raise CalibrationError(
                f"calibrate: no spot found in any of the {n} exposures of view {name}; is the source "
                "on, inside the volume, and is this the right view region?"
            )
    return Observations(
        paths=tuple(v[1] for v in views),
        names=tuple(v[0] for v in views),
        uv=uv,
        sigma=sigma,
        observed=torch.isfinite(sigma),
        positions_mm=positions_mm,
        skipped=tuple(skipped),
    )


def _check_constraints(obs: Observations, model: OpticalParameters, known: bool) -> None:
    """Refuse problems the data cannot constrain, with a message saying what to add."""
    counts = obs.observed.sum(0)  # per view
    n = obs.n_positions
    if known and n < 2:
        raise CalibrationError(
            f"calibrate: {n} target position; at least 2 are needed (3 mirror "
            "parameters each need ≥ 2 spots per view); record more positions"
        )
    if not known and n < 4:
        raise CalibrationError(
            f"calibrate: {n} target positions with --unknown-positions; at least 4 are "
            "needed (each adds 3 unknowns); record more or pass --known-positions"
        )
    if "mirrors" in model.fit:
        for j, path in enumerate(obs.paths):
            need = 2 if known else 3
            if path > 0 and int(counts[j]) < need:
                raise CalibrationError(
                    f"calibrate: view {obs.names[j]} has {int(counts[j])} spots; fitting its mirror needs "
                    f"≥ {need}; record more positions inside the volume"
                )
    if ("pose" in model.fit or "focus" in model.fit) and not known:
        if "pose" in model.fit:
            raise CalibrationError(
                "calibrate: --fit pose needs --known-positions: with unknown positions the "
                "camera defines the world frame (the gauge); drop pose from --fit"
            )
    n_unknowns = model.n_free() + (0 if known else 3 * n)
    n_data = 2 * int(obs.observed.sum())
    if n_data <= n_unknowns:
        raise CalibrationError(
            f"calibrate: {n_data} measured coordinates cannot determine {n_unknowns} unknowns; record more "
            f"positions (now {n}) or fit fewer groups (now {','.join(model.fit)})"
        )


def _predict(system: System, positions: torch.Tensor, paths, n_aperture: int, camera: int):
    c, f = spot_centroids(system, positions, list(paths), n_aperture=n_aperture, camera=camera)
    return c, f


def _per_view_rms(res: torch.Tensor, observed: torch.Tensor, names) -> dict:
    out = {}
    for j, name in enumerate(names):
        r = res[:, j][observed[:, j]]
        out[name] = float(torch.sqrt((r**2).sum(-1).mean() / 2)) if len(r) else math.nan
    return out


def triangulate(
    obs: Observations, system: System, *, n_aperture: int = 128, camera: int = 0, iterations: int = 100
) -> torch.Tensor:
    """(N, 3) source positions that best explain the spots through ``system`` (held fixed)."""
    sys64 = system.to(torch.float64)
    centre = sys64.volume.center_mm
    x = centre.expand(obs.n_positions, 3).clone().requires_grad_(True)
    w = torch.where(obs.observed, 1.0 / obs.sigma, torch.zeros_like(obs.sigma))
    target = torch.nan_to_num(obs.uv)
    opt = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=iterations,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure():
        opt.zero_grad()
        c, f = _predict(sys64, x, obs.paths, n_aperture, camera)
        ok = obs.observed & (f > 0)
        r = (c - target) * w.unsqueeze(-1)
        loss = 0.5 * torch.where(ok.unsqueeze(-1), r, torch.zeros_like(r)).pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return x.detach()


def calibrate(
    nominal: System,
    obs: Observations,
    cfg: CalibrationConfig = CalibrationConfig(),
    *,
    progress: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Fit the chosen optical parameters (and, if unknown, the positions) to the spots.

    Raises:
        CalibrationError: too few positions or spots for what is asked.
    """
    log = progress or (lambda text: None)
    known = cfg.known_positions
    if known and obs.positions_mm is None:
        raise CalibrationError(
            "calibrate: --known-positions, but target.toml gives no position_mm; "
            "pass --unknown-positions or record the positions"
        )
    model = OpticalParameters(nominal, cfg.fit, prior=cfg.prior, camera=cfg.camera, fix_mean_shift=not known)
    _check_constraints(obs, model, known)
    w = torch.where(obs.observed, 1.0 / obs.sigma, torch.zeros_like(obs.sigma))
    target = torch.nan_to_num(obs.uv)
    paths = obs.paths
    t0 = time.perf_counter()
    if known:
        positions = obs.positions_mm.to(torch.float64)
        with torch.no_grad():
            c0, _ = _predict(model(), positions, paths, cfg.n_aperture, cfg.camera)
        before = _per_view_rms(
            torch.where(obs.observed.unsqueeze(-1), c0 - target, 0.0), obs.observed, obs.names
        )
        free_x = None
    else:
        log("triangulating the positions through the nominal system")
        start = triangulate(obs, nominal, n_aperture=min(cfg.n_aperture, 128), camera=cfg.camera)
        free_x = start.clone().requires_grad_(True)
        positions = free_x
        before = {name: math.nan for name in obs.names}
    params = [p for p in model.parameters() if p.requires_grad] + ([free_x] if free_x is not None else [])
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=cfg.max_iterations,
        max_eval=int(cfg.max_iterations * 1.25),
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=cfg.tolerance,
    )
    losses: list[float] = []

    def closure():
        opt.zero_grad()
        c, f = _predict(model(), positions, paths, cfg.n_aperture, cfg.camera)
        ok = obs.observed & (f > 0)
        r = (c - target) * w.unsqueeze(-1)
        data = 0.5 * torch.where(ok.unsqueeze(-1), r, torch.zeros_like(r)).pow(2).sum()
        loss = data + model.prior_loss()
        loss.backward()
        losses.append(float(loss.detach()))
        if len(losses) % 25 == 0:
            log(f"calibrate: evaluation {len(losses)}, loss {losses[-1]:.6g}")
        return loss

    opt.step(closure)
    state = opt.state[params[0]]
    with torch.no_grad():
        system = model()
        pos = positions.detach().clone()
        c, f = _predict(system, pos, paths, cfg.n_aperture, cfg.camera)
        lost = obs.observed & ~(f > 0)
        if bool(lost.any()):
            i, j = (int(v) for v in lost.nonzero()[0])
            raise CalibrationError(
                f"calibrate: the fitted system sends no light from exposure {i} into view "
                f"{obs.names[j]}; the fit diverged — tighten the prior or fit fewer groups"
            )
        res = torch.where(obs.observed.unsqueeze(-1), c - target, torch.zeros_like(c))
        after = _per_view_rms(res, obs.observed, obs.names)
        rms = float(torch.sqrt((res**2).sum() / (2 * obs.observed.sum())))
    fit_s = time.perf_counter() - t0
    uncertainty = None
    if cfg.uncertainty:
        log("calibrate: standard errors of the parameters")
        uncertainty = parameter_uncertainty(model, obs, pos, known, cfg)
    return CalibrationResult(
        system=system,
        model=model,
        positions_mm=pos,
        predicted_uv=c,
        residual_uv=res,
        before_rms_px=before,
        after_rms_px=after,
        rms_px=rms,
        iterations=int(state.get("n_iter", 0)),
        time_s=fit_s,
        losses=losses,
        uncertainty=uncertainty,
    )


def parameter_uncertainty(
    model: OpticalParameters, obs: Observations, positions: torch.Tensor, known: bool, cfg: CalibrationConfig
) -> dict:
    """Standard errors of the fitted parameters at the solution (Laplace approximation).

    The σ-weighted residuals are linearised by central differences in every free scalar (the
    model's parameters are in units of their prior σ; fitted positions in mm); the posterior
    covariance is ``(JᵀJ + P)⁻¹`` with ``P`` the prior's Hessian (identity on the model's
    parameters, zero on the positions), scaled by the reduced χ² of the residuals when it
    exceeds 1 (residuals beyond the photon noise: the spot model's own error). With unknown
    positions they are free parameters too, so their uncertainty is carried into the
    instrument's.

    Returns:
        JSON-ready: per mirror ``tilt_deg`` (σ of the tilt angle: √(σ_u² + σ_v²)) and
        ``normal_shift_um``, their RMS over mirrors, and σ of the pose, focus and distortion
        parameters that were fitted, in the units of :meth:`OpticalParameters.changes`.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    x = positions.detach().clone()
    w = torch.where(obs.observed, 1.0 / obs.sigma, torch.zeros_like(obs.sigma)).unsqueeze(-1)
    target = torch.nan_to_num(obs.uv)

    def residuals() -> torch.Tensor:
        c, _ = _predict(model(), x, obs.paths, cfg.n_aperture, cfg.camera)
        return torch.where(obs.observed.unsqueeze(-1), (c - target) * w, 0.0).reshape(-1)

    columns = []
    h = 1e-3  # prior-σ units (0.002° of tilt, 0.5 µm of offset by default); 1 µm of position
    with torch.no_grad():
        flats = [p.view(-1) for p in params] + ([] if known else [x.view(-1)])
        for flat in flats:
            for i in range(flat.numel()):
                flat[i] += h
                plus = residuals()
                flat[i] -= 2 * h
                minus = residuals()
                flat[i] += h
                columns.append((plus - minus) / (2 * h))
    with torch.no_grad():
        r = residuals()
    jac = torch.stack(columns, 1)
    n_model = sum(p.numel() for p in params)
    precision = jac.T @ jac
    precision[:n_model, :n_model] += torch.eye(n_model, dtype=precision.dtype)
    # Residuals larger than the spots' photon noise (a spot model that is not exact) widen the
    # errors by √(χ²/dof), the usual correction; they are never narrowed below the noise's.
    dof = max(2 * int(obs.observed.sum()) - jac.shape[1], 1)
    chi2 = float(r.pow(2).sum()) / dof
    cov = torch.linalg.inv(precision)[:n_model, :n_model] * max(chi2, 1.0)
    offsets = {}
    start = 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            offsets[name] = slice(start, start + p.numel())
            start += p.numel()

    def block(name: str) -> torch.Tensor:
        return cov[offsets[name], offsets[name]]

    def sd(name: str, unit: float) -> list[float]:
        return (block(name).diagonal().sqrt() * unit).tolist()

    out: dict = {
        "method": "Laplace: (JᵀJ + prior)⁻¹ · max(1, χ²/dof) at the solution, J by central differences",
        "reduced_chi2": chi2,
    }
    if "mirrors" in model.fit:
        n_m = len(model.nominal.mirrors)
        tilt_var = block("mirror_tilt").diagonal().view(n_m, 2).sum(-1) * model.prior.tilt_deg**2
        shift_cov = block("mirror_shift")
        if model.fix_mean_shift:  # the physical offsets are z − mean(z)
            centre = torch.eye(n_m, dtype=shift_cov.dtype) - 1.0 / n_m
            shift_cov = centre @ shift_cov @ centre.T
        shift_var = shift_cov.diagonal() * (model.prior.shift_mm * 1e3) ** 2
        out["mirrors"] = [
            {"name": m.name, "tilt_deg": float(t), "normal_shift_um": float(d)}
            for m, t, d in zip(model.nominal.mirrors, tilt_var.sqrt(), shift_var.sqrt(), strict=True)
        ]
        out["tilt_rms_deg"] = float(tilt_var.mean().sqrt())
        out["normal_shift_rms_um"] = float(shift_var.mean().sqrt())
    if "pose" in model.fit:
        out["pose"] = {
            "rotation_deg": sd("pose_rotation", model.prior.rotation_deg),
            "position_um": sd("pose_position", model.prior.position_mm * 1e3),
        }
    if "focus" in model.fit:
        out["focus_distance_mm"] = sd("focus", model.prior.focus_mm)[0]
    if "distortion" in model.fit:
        out["distortion_k1_k2_p1_p2"] = sd("distortion", model.prior.distortion)
    return out
