"""Settings of a fit: :class:`FitConfig`, its TOML file (``--config FIT.toml``) and its checks."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from dataclasses import field as dc_field
from pathlib import Path

from calibration.model import parse_fit_groups
from optics.limits import check_types
from optics.sampling import SAMPLING_SCHEMES
from optics.tomlio import read_toml
from recon.errors import ConfigError
from recon.fitting.data import (
    AUTO_VOXELS_MAX,
    HALF_SEED_OFFSET,
    SPLIT_SEED_OFFSET,
    density_grid,
    object_pixel_mm,
)
from recon.model.fields.config import FIELD_KINDS, FieldConfig, voxel_shape
from recon.model.fields.registry import make_field
from recon.model.hashgrid import HashGridConfig
from recon.model.loss import LOSSES
from recon.model.render import RENDER_MODELS

__all__ = ["AUTO_STEP_MIN_MM", "AUTO_STEP_VOXELS", "GRID_STARTS", "MAX_GRID_VOXELS", "SENSITIVITY_MODES",
           "SOLVERS", "VOXEL_FIELD_MIN", "FitConfig", "auto_step_mm", "check_grid_sizes", "config_dict",
           "field_config", "field_factory", "fit_voxel_mm", "load_fit_config", "plan_line", "resolved",
           "voxel_field_shape"]

#: The fit's solvers (``solver``); ``auto`` picks EM where it can fit the field, else Adam.
SOLVERS = ("auto", "em", "adam", "grid")
#: The grid solver's starts (``grid_start``): the field's own, or EM's fit of the same data.
GRID_STARTS = ("", "em")

# The most a fit adds to its seed: the uncertainty's split k ≤ 8 thins with seed + k · SPLIT_SEED_OFFSET
# and fits its halves with seed + (2k + i) · HALF_SEED_OFFSET (split halves: + i · HALF_SEED_OFFSET).
SEED_MARGIN = 20 * HALF_SEED_OFFSET + 8 * SPLIT_SEED_OFFSET


@dataclass
class FitConfig:
    """Settings of a fit (every field documented; all can come from ``--config FIT.toml``).

    Attributes:
        field: a kind of :data:`~recon.model.fields.config.FIELD_KINDS`: ``voxel`` (default), ``hashgrid``,
            ``siren``, ``fourier``, ``gauss``, ``tensorf``, ``splitnet`` or ``mulfagrid``.
        solver: ``auto`` (default: ``em`` for a voxel field of the emission model fitted by the
            Poisson likelihood without regularisers or ``refine``, else ``adam``), ``em``
            (ordered-subsets EM, :mod:`recon.fitting.em`), ``adam`` (gradient steps on the data
            term plus regularisers over batches of ``batch_pixels``) or ``grid`` (Adam steps on an
            ordered subset of the pixels, the field evaluated on the output grid and projected by
            EM's operator, :class:`recon.fitting.solvers.GridSolver`; emission model, no ``refine``).
        backend: hash-grid backend, ``auto``, ``torch`` or ``tcnn``.
        device: ``auto``, ``cpu`` or ``cuda``.
        steps: the most steps (EM: subset updates; grid: subset steps; Adam: batches); the fit
            stops before when the held-out pixels say so, or after ``max_passes``.
        max_passes: the most passes over the training pixels (a pass is ``subsets`` EM updates or
            grid steps, or training pixels / ``batch_pixels`` Adam steps).
        subsets: ordered subsets of EM and of the grid solver (steps per pass over the data).
        em_init: scale of EM's start (the data's Gaussian plus a floor,
            :func:`recon.fitting.start.start_grid`); 1 starts at the data's light.
            EM changes a voxel by the ratio of measured to predicted light along its rays, and
            where pixels hold less than the read-noise variance that ratio stays near 1: a start
            at the mean leaves a haze there that early stopping keeps, a start at 1 % much less
            (chosen by trial fits on fit seed 0 of data/run042; bench/accuracy.py measures the
            result on other seeds).
        em_start: a density TIFF (another shot's density.tif, e.g. the previous one of a campaign)
            to start EM from instead of the data's Gaussian: moved onto the Gaussian's centre and
            scaled to its atoms (:func:`recon.fitting.start.warm_grid`; ``recon batch --warm-start``).
            Empty: the data's Gaussian.
        grid_start: the grid solver's start: ``""`` (the field's own initialisation, at the data's
            mean density) or ``"em"`` (EM's fit of the same data first — ``recon fit``'s defaults
            with this fit's seed, pool, strata and held-out fraction,
            :data:`recon.fitting.loop.EM_START_KEYS` — then the field fitted by least squares to
            that density averaged over each output voxel, :func:`recon.fitting.solvers.fit_to_grid`,
            and the grid solver's Adam steps from there).
        em_power: the exponent ω of EM's update ``x ← x · ratio^ω`` (:class:`recon.fitting.em.OSEM`):
            1 is EM; above 1 the over-relaxed EM, with the same fixed points and positivity.
        subset_block: consecutive training pixels kept together in one EM subset
            (:func:`recon.fitting.em.partition`); 1 draws single pixels.
        camera_sensitivity: ``auto`` fits one light factor per camera when the views come from
            two or more cameras (the first camera with views is the reference, factor 1), else
            trusts the system file; ``fit`` always fits them; ``fixed`` trusts the system file's
            photometry for every camera (:mod:`recon.fitting.sensitivity`).
        holdout: fraction of each view's usable pixels held out of the fit; their deviance stops it
            (:mod:`recon.fitting.holdout`). 0: no stop rule, the fit runs ``steps``.
        check_every: steps between held-out checks; 0 chooses ``max(1, subsets // 8)`` for EM, a
            pass (``subsets``) for the grid solver and 100 for Adam
            (:func:`recon.fitting.loop.check_interval`).
        patience: held-out checks without improvement before the fit stops.
        stop_significance: standard errors (of the paired per-pixel difference) by which a check's
            held-out deviance must fall below the best's to count as an improvement
            (:class:`recon.fitting.holdout.StopRule`); 0: any fall beyond 10⁻⁴ relative.
        batch_pixels: pixels per step, drawn across all views.
        pool_samples: sub-pixel × aperture samples traced per pixel, S.
        samples_per_step: of those, how many each step renders per pixel (drawn at random, the
            weights scaled by S / samples_per_step so the estimate stays unbiased); 0 (the
            default) renders all S: the prediction of a pixel from fewer samples is unbiased but noisy,
            and the Poisson likelihood of a noisy prediction is minimised by a *lower* one
            (−log is convex), which biased the atom number of data/run042 by −8 % with one
            sample of four (bench/fit_run042.py). A fixed pool is noisy too, for a defocused
            view most: where counts are below the read-noise variance the Poisson fit acts
            like least squares with errors in the regressor and shrinks the total (−5 % with
            all of four random samples, −0.4 % with all of eight), hence ``pool_samples = 8``.
        pool_sampling: how each pixel's samples are drawn (:data:`optics.sampling.SAMPLING_SCHEMES`):
            ``sobol`` (the default: sub-pixel offsets and aperture points each a 2-d Sobol' net,
            digitally shifted per pixel and paired at random, which stratify the pixel and the
            aperture) or ``random`` (independent sub-pixel offsets and aperture angles, stratified
            aperture radii; the default before the Sobol' samples, and what ``recon simulate``
            draws). The pool is a lower-variance estimate of each pixel's integral from the same
            number of rays with ``sobol`` (``bench/pool_sampling.py``).
        pool_boost_e: a pixel measuring more than this many photoelectrons per frame gets
            ``ceil(mean / pool_boost_e)`` times ``pool_samples`` samples (at most ``pool_boost_max``
            times; :func:`recon.fitting.raypool.boost_pool`): a pixel's quadrature error grows as its
            light squared, the photon noise only as its light, so the brightest pixels need more
            samples for the pool's error to stay below the noise. 0: every pixel ``pool_samples``.
            10 e⁻ and at most 8× were chosen from 5, 10, 20, 50 e⁻ and at most 8× or 32× by fits
            of fit seed 0 / noise seed 42 only, at 1× and 10× run042's photons (README, "Samples
            where the light is").
        pool_boost_max: the most times ``pool_samples`` a bright pixel gets.
        defocused_rays: rays traced per pooled sample in a view whose defocus blur at the box
            centre is wider than the box's image (:func:`recon.fitting.raypool.defocused_views`;
            the direct view of the dome, 371 px of blur): each of its pixels integrates over a
            cone several mm wide that ``pool_samples`` rays sample coarsely, and EM fits the
            pattern of those few rays.
        step_mm: stratum length along rays, mm; 0 chooses it from the fit's voxel
            (:func:`auto_step_mm`: 1.6 voxels, at least 0.03 mm).
        lr: initial learning rate of Adam.
        lr_final: learning rate at the last step (cosine decay).
        loss: ``poisson`` (default), ``gaussian`` or ``mse``.
        tv_weight: weight of the total-variation regulariser.
        sparsity_weight: weight of the mean-density (L1) regulariser.
        model: ``emission`` (atom clouds) or ``emission-absorption`` (opaque objects).
        attenuation: κ per unit density for ``emission-absorption``, mm⁻¹.
        voxel_size_mm: voxel size of density.tif; 0 chooses the object-space pixel.
        seed: seed of every random choice (same seed, same device → same numbers).
        memory_gb: the memory a fit may use, GB; a fit whose estimated peak exceeds it is refused
            before tracing (:mod:`recon.fitting.budget`). 0: the machine's (or its container's).
        checkpoint_every: steps between checkpoints.
        log_every: steps between progress lines when output is not a terminal.
        field_options: extra options of the field (see :mod:`recon.model.fields`).
        refine: optical parameter groups refined jointly with the density (self-calibration),
            e.g. ``"mirrors"`` or ``"mirrors,pose,focus"``; empty: the optics stay fixed.
        refine_warmup: density-only steps before the refinement starts.
        refine_lr: Adam learning rate of the optical parameters (in units of their prior σ).
        fringes: after the fit, fit the density's interference fringes
            (:mod:`recon.analysis.fringes`: period, direction, contrast, phase): metrics.json's
            ``fringes``, renders/fringes.png, the report and the summary (``recon fit --fringes``).
        uncertainty_splits: K > 0 refits K binomial-thinning splits of the photons into halves
            (2K fits of half the data, :mod:`recon.fitting.uncertainty`) and reports each
            figure's noise sd from their spread (metrics.json's ``uncertainty``, the summary,
            the report; ``recon fit --uncertainty K``); 0: none.
    """

    field: str = "voxel"
    solver: str = "auto"
    backend: str = "auto"
    device: str = "auto"
    steps: int = 1500
    max_passes: float = 8.0
    subsets: int = 32
    em_init: float = 1.0
    em_start: str = ""
    grid_start: str = ""
    em_power: float = 1.0
    subset_block: int = 1
    camera_sensitivity: str = "auto"
    holdout: float = 0.05
    check_every: int = 0
    patience: int = 3
    stop_significance: float = 1.0
    batch_pixels: int = 256
    pool_samples: int = 8
    pool_sampling: str = "sobol"
    pool_boost_e: float = 10.0
    pool_boost_max: int = 8
    samples_per_step: int = 0
    defocused_rays: int = 4
    step_mm: float = 0.0
    lr: float = 1e-2
    lr_final: float = 1e-3
    loss: str = "poisson"
    tv_weight: float = 0.0
    sparsity_weight: float = 0.0
    model: str = "emission"
    attenuation: float = 1.0
    voxel_size_mm: float = 0.0
    seed: int = 0
    memory_gb: float = 0.0
    checkpoint_every: int = 250
    log_every: int = 100
    field_options: dict = dc_field(default_factory=dict)
    refine: str = ""
    refine_warmup: int = 300
    refine_lr: float = 2e-3
    fringes: bool = False
    uncertainty_splits: int = 0

    @property
    def em(self) -> bool:
        """True when the fit runs EM (``solver`` ``em``, or ``auto`` where EM can fit it)."""
        return self.solver == "em" or (self.solver == "auto" and self.em_possible)

    @property
    def solver_kind(self) -> str:
        """The solver the fit runs: ``em``, ``grid`` or ``adam`` (``auto`` resolved)."""
        return "em" if self.em else "grid" if self.solver == "grid" else "adam"

    @property
    def ordered_subsets(self) -> bool:
        """True when a pass over the data is ``subsets`` steps (EM and the grid solver), not batches."""
        return self.solver_kind in ("em", "grid")

    @property
    def em_possible(self) -> bool:
        """A voxel field of the emission model, the Poisson likelihood, no regulariser, no refine."""
        return (self.field == "voxel" and self.model == "emission" and not self.refine
                and self.loss == "poisson" and self.tv_weight == 0 and self.sparsity_weight == 0)

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work."""
        checks = [
            (self.field in FIELD_KINDS, "field", ", ".join(FIELD_KINDS)),
            (self.backend in ("auto", "torch", "tcnn"), "backend", "auto, torch or tcnn"),
            (self.device in ("auto", "cpu", "cuda"), "device", "auto, cpu or cuda"),
            (self.solver in SOLVERS, "solver", ", ".join(SOLVERS)),
            (1 <= self.steps <= 10**8, "steps", "≥ 1 and ≤ 10⁸"),
            (0 < self.max_passes <= 1e6, "max_passes", "> 0 and ≤ 10⁶"),
            (1 <= self.subsets <= 4096, "subsets", "≥ 1 and ≤ 4096"),
            (1e-6 <= self.em_init <= 1e3, "em_init", "in 1e-6 … 1e3 (the start's scale, 1: the data's)"),
            (1 <= self.em_power <= 3, "em_power", "in 1 … 3 (the EM update's exponent, 1: EM)"),
            (self.grid_start in GRID_STARTS, "grid_start", " or ".join(repr(v) for v in GRID_STARTS)),
            (1 <= self.subset_block <= 2**20, "subset_block", "≥ 1 and ≤ 2²⁰ (pixels kept together)"),
            (self.camera_sensitivity in SENSITIVITY_MODES, "camera_sensitivity", "auto, fit or fixed"),
            (0 <= self.holdout <= 0.5, "holdout", "in 0 … 0.5 (a fraction of the pixels)"),
            (0 <= self.check_every <= 10**8, "check_every", "≥ 0 (0 = automatic) and ≤ 10⁸"),
            (1 <= self.patience <= 10**6, "patience", "≥ 1 and ≤ 10⁶"),
            (0 <= self.stop_significance <= 10, "stop_significance", "in 0 … 10 (standard errors; 0: off)"),
            (1 <= self.batch_pixels <= 2**24, "batch_pixels", "≥ 1 and ≤ 2²⁴"),
            (1 <= self.pool_samples <= 256, "pool_samples", "≥ 1 and ≤ 256"),
            (self.pool_sampling in SAMPLING_SCHEMES, "pool_sampling", " or ".join(SAMPLING_SCHEMES)),
            (0 <= self.pool_boost_e <= 1e9, "pool_boost_e", "≥ 0 (e⁻ a frame; 0: no boost) and ≤ 1e9"),
            (1 <= self.pool_boost_max <= 64, "pool_boost_max", "≥ 1 and ≤ 64"),
            (0 <= self.samples_per_step <= self.pool_samples, "samples_per_step",
             "in 0 … pool_samples (0: all)"),
            (1 <= self.defocused_rays <= 64, "defocused_rays", "≥ 1 and ≤ 64"),
            (self.step_mm == 0 or 1e-4 <= self.step_mm <= 10, "step_mm",
             "≥ 0 (0 = automatic) and in 1e-4 … 10 mm otherwise"),
            (self.lr > 0 and self.lr_final > 0, "lr", "> 0 (lr and lr_final)"),
            (self.loss in LOSSES, "loss", ", ".join(LOSSES)),
            (self.model in RENDER_MODELS, "model", ", ".join(RENDER_MODELS)),
            (0 <= self.tv_weight <= 1e6, "tv_weight", "≥ 0 and ≤ 1e6"),
            (0 <= self.sparsity_weight <= 1e6, "sparsity_weight", "≥ 0 and ≤ 1e6"),
            (0 < self.attenuation <= 1e6, "attenuation", "> 0 and ≤ 1e6 (mm⁻¹ per unit density)"),
            (self.voxel_size_mm == 0 or 1e-4 <= self.voxel_size_mm <= 100, "voxel_size_mm",
             "≥ 0 (0 = automatic) and in 1e-4 … 100 mm otherwise"),
            (0 <= self.seed < 2**63 - SEED_MARGIN, "seed", f"≥ 0 and < 2⁶³ − {SEED_MARGIN}"),
            (0 <= self.memory_gb <= 1e6, "memory_gb", "≥ 0 (0 = the machine's) and ≤ 10⁶ GB"),
            (1 <= self.checkpoint_every <= 10**8, "checkpoint_every", "≥ 1 and ≤ 10⁸"),
            (1 <= self.log_every <= 10**8, "log_every", "≥ 1 and ≤ 10⁸"),
            (0 <= self.uncertainty_splits <= 8, "uncertainty_splits", "in 0 … 8 (splits refitted; 0: none)"),
        ]
        if self.em_start and not Path(self.em_start).is_file():
            raise ConfigError(f"fit config: 'em_start' must name a density TIFF (a fit's density.tif), but "
                              f"{self.em_start!r} is not a file")
        for ok, key, expected in checks:
            if not ok:
                raise ConfigError(f"fit config: '{key}' must be {expected}, got {getattr(self, key)!r}")
        if self.solver == "em" and not self.em_possible:
            raise ConfigError(f"fit config: solver 'em' fits a voxel field of the emission model by the "
                              f"Poisson likelihood alone (got field {self.field!r}, model {self.model!r}, "
                              f"loss {self.loss!r}, refine {self.refine!r}, tv_weight {self.tv_weight:g}, "
                              f"sparsity_weight {self.sparsity_weight:g}); pass solver = \"adam\" or "
                              "\"auto\"")
        if self.grid_start and self.solver_kind != "grid":
            raise ConfigError(f"fit config: grid_start = {self.grid_start!r} starts the grid solver; pass "
                              "solver = \"grid\" or drop grid_start")
        if self.solver == "grid" and (self.model != "emission" or self.refine):
            raise ConfigError(f"fit config: solver 'grid' projects the field's voxel grid by the emission "
                              f"model's operator through the static optics (got model {self.model!r}, refine "
                              f"{self.refine!r}); pass solver = \"adam\" for another model or --refine")
        try:
            field_config(self)  # field_options are checked now, not after tracing
        except ConfigError as err:
            raise ConfigError(f"fit config: 'field_options': {err}; fix [field_options] of --config") \
                from None
        if self.em and self.field_options.get("activation", "linear") != "linear":
            raise ConfigError(f"fit config: the EM solver needs the linear activation, not "
                              f"{self.field_options['activation']!r}; drop 'activation' from "
                              "[field_options] or pass solver = \"adam\"")
        if self.refine:

            groups = parse_fit_groups(self.refine, where="fit --refine")
            if "distortion" in groups:
                raise ConfigError("fit --refine: distortion cannot be refined during a fit; calibrate it "
                                  "with `recon calibrate --fit distortion`, or pass mirrors,pose,focus")
            if not 0 <= self.refine_warmup < self.steps or self.refine_lr <= 0:
                raise ConfigError(f"fit config: 'refine_warmup' must be in 0 … steps − 1 ({self.steps - 1}) "
                                  f"and 'refine_lr' > 0, got {self.refine_warmup} and "
                                  f"{self.refine_lr}")


def load_fit_config(path: str | os.PathLike | None, *, base: dict | None = None, **overrides) -> FitConfig:
    """Read a fit TOML (keys = :class:`FitConfig` fields) and apply non-None ``overrides``.

    ``base`` (the settings saved with a fit being resumed) stands in for the defaults: the TOML's
    keys replace its values, and the overrides replace both.
    """
    data: dict = dict(base or {})
    if path is not None:
        data.update(_read_fit_toml(Path(path)))
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - {f.name for f in fields(FitConfig)})
    if unknown:
        allowed = ", ".join(f.name for f in fields(FitConfig))
        raise ConfigError(f"fit config: unknown setting '{unknown[0]}'; allowed: {allowed}")
    check_types(FitConfig, given, "fit config (settings given)")
    data.update(given)
    try:
        cfg = FitConfig(**data)
    except TypeError as err:
        raise ConfigError(f"fit config: {err}") from None
    cfg.validate()
    return cfg


def _read_fit_toml(path: Path) -> dict:
    """The keys of a fit TOML, checked against :class:`FitConfig`'s fields and types."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"fit config {path} is not a regular file; pass a TOML file")
    if not path.is_file():
        raise ConfigError(f"fit config {path} does not exist; pass an existing TOML file")
    data = read_toml(path, "fit config")
    known = {f.name for f in fields(FitConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    check_types(FitConfig, data, str(path), fix="; fix the fit config")
    return data


def config_dict(cfg: FitConfig) -> dict:
    """JSON-ready dict of a config."""
    return json.loads(json.dumps(asdict(cfg)))


def field_config(cfg: FitConfig, init_density: float = 1.0) -> FieldConfig:
    """The :class:`~recon.model.fields.FieldConfig` of a fit config (checked; nothing is built).

    Raises:
        ConfigError: an unknown or invalid key in ``field_options`` (or its ``encoding`` table).
    """
    options = {"kind": cfg.field, "init_density": float(init_density),
               **({"activation": "linear"} if cfg.em else {}), **cfg.field_options}
    if "encoding" in options and isinstance(options["encoding"], dict):
        options["encoding"] = HashGridConfig.from_dict(options["encoding"])
    return FieldConfig.from_dict(options)


#: What ``camera_sensitivity`` may be (:mod:`recon.fitting.sensitivity`).
SENSITIVITY_MODES = ("auto", "fit", "fixed")

#: The automatic stratum (``step_mm = 0``) in voxels of the fit (:func:`fit_voxel_mm`): data/run042's
#: 0.03 mm strata on a 128³ EM grid of 18.75 µm voxels, where the defaults were tuned ...
AUTO_STEP_VOXELS = 1.6
#: ... and never shorter than this: a small box's fine grid gains little from strata finer than
#: the optics resolve, and costs in proportion.
AUTO_STEP_MIN_MM = 0.03


#: The fewest voxels along the box's longest edge that a voxel field gets by default (a coarser
#: output grid is divided: :func:`voxel_field_shape`).
VOXEL_FIELD_MIN = 128


def voxel_field_shape(cfg: FitConfig, data) -> tuple[int, int, int]:
    """The (Z, Y, X) grid of a fit's voxel field: ``voxel_resolution`` where given, else density.tif's.

    By default the field's voxels are the output's (:func:`~recon.fitting.data.density_grid`), one
    for one: a field on another grid reaches density.tif through trilinear interpolation, which
    blurs what lies near the grid's Nyquist frequency. An output grid of fewer than
    :data:`VOXEL_FIELD_MIN` voxels along its longest edge is divided k times along every axis
    (the least k that reaches it): EM on voxels much coarser than the optics resolve follows the
    views poorly (the one-view instrument of tests/micro.py, 15³ output voxels, misplaces its
    cloud's centroid beyond test_batch.py's bound on them).
    """
    if "voxel_resolution" in cfg.field_options:
        return voxel_shape(field_config(cfg).voxel_resolution)
    shape = density_grid(data, cfg.voxel_size_mm)[0]
    k = -(-VOXEL_FIELD_MIN // max(shape))
    return tuple(k * n for n in shape)


def fit_voxel_mm(cfg: FitConfig, data) -> float:
    """The voxel a fit resolves, mm: a voxel field's longest voxel edge, else the output voxel."""
    box = data.system.volume.size_mm.tolist()
    if cfg.field == "voxel":
        nz, ny, nx = voxel_field_shape(cfg, data)
        return max(box[0] / nx, box[1] / ny, box[2] / nz)
    return density_grid(data, cfg.voxel_size_mm)[2][0]


def auto_step_mm(cfg: FitConfig, data) -> float:
    """``step_mm = 0``'s stratum, mm.

    :data:`AUTO_STEP_VOXELS` of :func:`fit_voxel_mm`, at least :data:`AUTO_STEP_MIN_MM`, to three
    significant digits.
    """
    return max(AUTO_STEP_MIN_MM, float(f"{AUTO_STEP_VOXELS * fit_voxel_mm(cfg, data):.3g}"))


def resolved(cfg: FitConfig, data) -> FitConfig:
    """``cfg`` with its automatic settings made concrete for ``data``.

    ``step_mm = 0`` becomes :func:`auto_step_mm`; a voxel field without ``voxel_resolution`` gets
    :func:`voxel_field_shape`'s, written ``[nx, ny, nz]`` into ``field_options`` (as a checkpoint and
    config.json then record it).
    """
    if cfg.field == "voxel" and "voxel_resolution" not in cfg.field_options:
        nz, ny, nx = voxel_field_shape(cfg, data)
        cfg = replace(cfg, field_options={**cfg.field_options, "voxel_resolution": [nx, ny, nz]})
    return cfg if cfg.step_mm > 0 else replace(cfg, step_mm=auto_step_mm(cfg, data))


def plan_line(cfg: FitConfig, data) -> str:
    """One line saying the grids and strata a fit will use, and which were chosen for it."""
    run = resolved(cfg, data)
    shape, _, voxel = density_grid(data, cfg.voxel_size_mm)
    parts = []
    if cfg.field == "voxel":
        nz, ny, nx = voxel_field_shape(cfg, data)
        parts.append(f"voxel field {nx}×{ny}×{nz} ({1e3 * fit_voxel_mm(cfg, data):.4g} µm)")
    step = f"strata {run.step_mm:g} mm"
    if cfg.step_mm == 0:
        step += f" (automatic: {AUTO_STEP_VOXELS:g} × the fit's voxel, at least {AUTO_STEP_MIN_MM:g} mm)"
    parts.append(step)
    out = f"density.tif {shape[2]}×{shape[1]}×{shape[0]} of {1e3 * voxel[0]:.4g} µm"
    if cfg.voxel_size_mm <= 0 and voxel[0] > object_pixel_mm(data):
        longest = float(data.system.volume.size_mm.max())
        out += (f" (the object pixel, {1e3 * object_pixel_mm(data):.4g} µm, would make "
                f"{int(longest / object_pixel_mm(data))} along the box's longest edge; automatic voxels stop "
                f"at {AUTO_VOXELS_MAX}: set voxel_size_mm for another)")
    parts.append(out)
    return "plan: " + ", ".join(parts)


def field_factory(cfg: FitConfig, box_min, box_max, mean_density: float, device):
    """Build the field of a fit config (density starts at the data's mean density)."""
    return make_field(field_config(cfg, mean_density), box_min, box_max, backend=cfg.backend, device=device,
                      seed=cfg.seed)


#: The most voxels a grid of a fit may hold (one float32 copy: 4 GiB); beyond it a fit is refused
#: before any work, saying what the grid would cost.
MAX_GRID_VOXELS = 2**30


def check_grid_sizes(data, cfg: FitConfig) -> None:
    """Refuse, before tracing, an output grid or voxel field too large to hold.

    Args:
        data: the run's :class:`~recon.fitting.data.FitData` (its box).
        cfg: fit settings (``voxel_size_mm`` and, for a voxel field, ``field_options.voxel_resolution``).

    Raises:
        ConfigError: naming the grid, its size in voxels and bytes, and the setting to change.
    """
    grids = [("the output grid (voxel_size_mm)", density_grid(data, cfg.voxel_size_mm)[0])]
    if cfg.field == "voxel":
        grids.append(("the voxel field (field_options.voxel_resolution)", voxel_field_shape(cfg, data)))
    for what, shape in grids:
        voxels = math.prod(shape)
        if voxels > MAX_GRID_VOXELS:
            size = f"{shape[2]}×{shape[1]}×{shape[0]} voxels ({4 * voxels / 2**30:.3g} GiB as float32"
            raise ConfigError(f"fit: {what} would be {size}, more than the {MAX_GRID_VOXELS:.3g}-voxel "
                              "limit); choose a coarser voxel in --config")
