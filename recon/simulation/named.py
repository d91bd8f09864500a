"""The named phantoms (``--phantom NAME``) and their registry :data:`PHANTOMS`.

The shapes, their defaults and the phantom-file format are described in
:mod:`recon.simulation.phantoms`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from recon.errors import ConfigError
from recon.io.volume import Volume
from recon.simulation.doe import make_doe_mesh
from recon.simulation.phantoms import Phantom, PrimitivePhantom, Vec3, VolumePhantom
from recon.simulation.primitives import Box, Donut, Fringes, Gaussian, Sphere, as_vec3
from recon.simulation.voxelize import voxelize_mesh

__all__ = ["PHANTOMS", "box", "clouds", "doe", "donut", "fringes", "gaussian", "interferometer", "sphere",
           "spike"]


def gaussian(
    atoms: float,
    *,
    sigma_mm: float | Sequence[float] = 0.5,
    covariance_mm2: Sequence[Sequence[float]] | None = None,
    center_mm: Vec3 = (0.0, 0.0, 0.0),
) -> PrimitivePhantom:
    """Gaussian cloud (REFERENCE §1: σ 0.5 mm).

    Args:
        atoms: total atom number.
        sigma_mm: standard deviation, scalar or ``(σx, σy, σz)``, mm.
        covariance_mm2: (3, 3) covariance, mm²; overrides ``sigma_mm``.
        center_mm: (3,) centre, mm.
    """
    if covariance_mm2 is not None:
        g = Gaussian(center_mm, covariance_mm2)
    else:
        g = Gaussian.isotropic(center_mm, sigma_mm)
    params = {"sigma_mm": sigma_mm, "center_mm": as_vec3(center_mm)}
    if covariance_mm2 is not None:
        params = {"covariance_mm2": [as_vec3(r) for r in g.covariance_mm2], "center_mm": as_vec3(center_mm)}
    return PrimitivePhantom("gaussian", [(1.0, g)], atoms=atoms, params=params)


def fringes(
    atoms: float,
    *,
    sigma_mm: float | Sequence[float] = 0.5,
    period_mm: float = 0.2,
    phase_rad: float = 0.0,
    direction: Vec3 = (0.0, 1.0, 0.0),
    center_mm: Vec3 = (0.0, 0.0, 0.0),
    chirp_per_mm2: float = 0.0,
) -> PrimitivePhantom:
    """Interference fringes: Gaussian × sin²(k n·(x − c) − φ), k = π/period (REFERENCE §1).

    The fringe wave vector points along +y by default; ``period_mm`` (200 µm) is the distance
    between adjacent density maxima, so the bright and dark bands are 100 µm wide. The phase is
    counted from the cloud centre: φ = 0 puts a dark fringe through the centre. Normalisation:
    ``∫ G sin² = ½ (1 − e^{−2k²σ²} cos 2φ)`` (σ along n), exact.

    Args:
        atoms: total atom number.
        sigma_mm: envelope standard deviation, scalar or ``(σx, σy, σz)``, mm.
        period_mm: distance between adjacent density maxima, mm.
        phase_rad: φ, rad.
        direction: (3,) wave-vector direction (normalised here).
        center_mm: (3,) centre of the envelope and origin of the phase, mm.
        chirp_per_mm2: κ, rad/mm²: the phase ``k s + ½ κ s²`` with ``s = n·(x − c)``, so the local
            period is ``π / (k + κ s)``, ``period_mm`` at the centre (0: plain fringes; what a
            model of straight, evenly spaced fringes cannot describe).
    """
    fr = Fringes(direction, period_mm, phase_rad, center_mm, chirp_per_mm2)
    params = {
        "sigma_mm": sigma_mm,
        "period_mm": float(period_mm),
        "phase_rad": float(phase_rad),
        "direction": as_vec3(fr.direction),
        "center_mm": as_vec3(center_mm),
        **({"chirp_per_mm2": fr.chirp_per_mm2} if fr.chirp_per_mm2 else {}),
    }
    return PrimitivePhantom(
        "fringes", [(1.0, Gaussian.isotropic(center_mm, sigma_mm))], atoms=atoms, fringes=fr, params=params
    )


def donut(
    atoms: float,
    *,
    sigma_r_mm: float = 0.5,
    hole_mm: float = 0.2,
    sigma_z_mm: float = 0.2,
    power: int = 2,
    center_mm: Vec3 = (0.0, 0.0, 0.0),
) -> PrimitivePhantom:
    """Ring cloud around z: transverse σ 0.5 mm with a 0.2 mm hole, longitudinal σ 0.2 mm.

    ``(1 − e^{−r²/2h²})^p e^{−r²/2σr²} e^{−z²/2σz²}`` as in gradoptics' ``AtomCloudDonut``
    (p = 2); see :class:`Donut`.

    Args:
        atoms: total atom number.
        sigma_r_mm: transverse width σr, mm.
        hole_mm: Gaussian width of the hole, mm.
        sigma_z_mm: longitudinal width σz, mm.
        power: p, integer ≥ 1.
        center_mm: (3,) centre, mm.
    """
    d = Donut(center_mm, sigma_r_mm, hole_mm, sigma_z_mm, power)
    params = {**d.table()}
    return PrimitivePhantom("donut", [(1.0, d)], atoms=atoms, params=params)


def spike(
    atoms: float,
    *,
    bulk_weight: float = 0.7,
    spike_sigma_r_mm: float = 0.1, spike_sigma_z_mm: float = 0.4,
    offset_mm: float = 0.4,
    center_mm: Vec3 = (0.0, 0.0, 0.0),
) -> PrimitivePhantom:
    """Bulk cloud plus a thin spike along +z (after gradoptics' ``AtomCloudSpike``).

    Bulk: Gaussian σ (0.5, 0.5, 0.2) mm at the centre with 70 % of the atoms. Spike: Gaussian
    σ (0.1, 0.1, σz) mm at ``center + (0, 0, offset)`` with 30 %. gradoptics uses σz 1 mm and an
    offset of 1 mm; the reconstruction box is only ±1.2 mm, so both are scaled by 0.4 (our
    choice): σz 0.4 mm, offset 0.4 mm, and 98 % of the spike's atoms lie below z = 1.2 mm.

    Args:
        atoms: total atom number.
        bulk_weight: share of the atoms in the bulk, in [0, 1].
        spike_sigma_r_mm: transverse width of the spike, mm.
        spike_sigma_z_mm: longitudinal width of the spike, mm.
        offset_mm: spike centre above the bulk centre along +z, mm.
        center_mm: (3,) bulk centre, mm.
    """
    c = np.asarray(center_mm, dtype=float)
    bulk = Gaussian.isotropic(c, (0.5, 0.5, 0.2))
    thin = Gaussian.isotropic(c + np.array([0.0, 0.0, offset_mm]),
                              (spike_sigma_r_mm, spike_sigma_r_mm, spike_sigma_z_mm))
    if not 0.0 <= bulk_weight <= 1.0:
        raise ConfigError(f"phantom spike: bulk_weight must be in [0, 1], got {bulk_weight}")
    params = {
        "bulk_weight": float(bulk_weight),
        "bulk_sigma_mm": [0.5, 0.5, 0.2],
        "spike_sigma_r_mm": float(spike_sigma_r_mm),
        "spike_sigma_z_mm": float(spike_sigma_z_mm),
        "offset_mm": float(offset_mm),
        "center_mm": as_vec3(c),
    }
    comps = [(bulk_weight, bulk), (1.0 - bulk_weight, thin)]
    return PrimitivePhantom("spike", comps, atoms=atoms, params=params)


def clouds(
    atoms: float,
    *,
    n: int = 3,
    seed: int = 0,
    spread_mm: float = 0.6,
    sigma_range_mm: tuple[float, float] = (0.1, 0.25),
    min_separation_mm: float = 0.5,
    center_mm: Vec3 = (0.0, 0.0, 0.0),
) -> PrimitivePhantom:
    """``n`` small isotropic Gaussian clouds at depths and places drawn from ``seed``.

    Centres uniform in ``center ± spread_mm`` at least ``min_separation_mm`` apart, σ uniform in
    ``sigma_range_mm``, atom shares uniform in [0.5, 1.5] (normalised). The drawn layout is in
    :attr:`~Phantom.params` (and therefore in the run's phantom file).

    Args:
        atoms: total atom number.
        n: number of clouds.
        seed: seed of the layout.
        spread_mm: half-width of the cube the centres are drawn in, mm.
        sigma_range_mm: (low, high) of the cloud widths, mm.
        min_separation_mm: smallest distance between centres, mm.
        center_mm: (3,) centre of the cube, mm.
    """
    if n < 1:
        raise ConfigError(f"phantom clouds: n must be ≥ 1, got {n}")
    rng = np.random.default_rng(seed)
    c0 = np.asarray(center_mm, dtype=float)
    centres: list[np.ndarray] = []
    for _ in range(10000):
        p = c0 + rng.uniform(-spread_mm, spread_mm, 3)
        if all(np.linalg.norm(p - q) >= min_separation_mm for q in centres):
            centres.append(p)
            if len(centres) == n:
                break
    else:
        raise ConfigError(
            f"phantom clouds: cannot place {n} clouds {min_separation_mm} mm apart within ±{spread_mm} mm; "
            "lower n or min_separation_mm"
        )
    sigmas = rng.uniform(*sigma_range_mm, n)
    shares = rng.uniform(0.5, 1.5, n)
    comps = [
        (float(w), Gaussian.isotropic(c, float(s)))
        for c, s, w in zip(centres, sigmas, shares, strict=True)
    ]
    params = {
        "seed": int(seed),
        "clouds": [
            {"center_mm": as_vec3(c), "sigma_mm": float(s), "share": float(w / shares.sum())}
            for c, s, w in zip(centres, sigmas, shares, strict=True)
        ],
    }
    return PrimitivePhantom("clouds", comps, atoms=atoms, params=params)


def interferometer(
    atoms: float,
    *,
    sigma_mm: Sequence[float] = (0.45, 0.40, 0.35),
    period_mm: float = 0.18,
    phase_rad: float = 0.7,
    direction: Vec3 = (0.15, 1.0, 0.1),
    clumps: int = 40,
    clump_fraction: float = 0.25,
    clump_sigma_mm: tuple[float, float] = (0.012, 0.035),
    seed: int = 42,
    center_mm: Vec3 = (0.0, 0.0, 0.0),
) -> PrimitivePhantom:
    """A cloud as an interferometer leaves it: an elongated envelope, fringes across it, and clumps.

    ``(1 − f) G_envelope + f Σ_i w_i G_i`` times sin²(k n·(x − c) − φ), k = π/period: the
    envelope is a Gaussian of widths ``sigma_mm``; ``clumps`` small isotropic Gaussians (σ
    uniform in ``clump_sigma_mm``, 12–35 µm by default) at centres drawn from the envelope
    itself, with shares uniform in [0.5, 1.5] of the clump fraction ``f``, stand for the dense
    knots of a real cloud; the fringes (period 180 µm, tilted off +y) modulate all of it. The
    envelope gives the low frequencies, the fringes a band at 1/period, the clumps power out to
    beyond 1/(40 µm): no Fourier shell of the truth is empty, so its FSC resolution is a
    measurement, not an accident of the spectrum. The drawn clumps are in
    :attr:`~Phantom.params`.

    Args:
        atoms: total atom number.
        sigma_mm: envelope standard deviations ``(σx, σy, σz)``, mm.
        period_mm: distance between adjacent fringe maxima, mm.
        phase_rad: φ, rad (counted from the centre).
        direction: (3,) fringe wave-vector direction (normalised here).
        clumps: number of clumps (0: none).
        clump_fraction: share of the atoms in the clumps, in [0, 1).
        clump_sigma_mm: (low, high) of the clump widths, mm.
        seed: seed of the clumps.
        center_mm: (3,) centre of the envelope and origin of the phase, mm.
    """
    if clumps < 0 or not 0 <= clump_fraction < 1:
        raise ConfigError(f"phantom interferometer: need clumps ≥ 0 and clump_fraction in [0, 1), got "
                          f"{clumps} and {clump_fraction}")
    rng = np.random.default_rng(seed)
    c0 = np.asarray(center_mm, dtype=float)
    envelope = Gaussian.isotropic(center_mm, sigma_mm)
    centres = c0 + rng.standard_normal((clumps, 3)) * np.broadcast_to(np.asarray(sigma_mm, float), (3,))
    widths = rng.uniform(*clump_sigma_mm, clumps)
    shares = rng.uniform(0.5, 1.5, clumps)
    shares = clump_fraction * shares / shares.sum() if clumps else shares
    comps = [(1.0 - clump_fraction if clumps else 1.0, envelope)]
    comps += [(float(w), Gaussian.isotropic(c, float(s)))
              for c, s, w in zip(centres, widths, shares, strict=True)]
    fr = Fringes(direction, period_mm, phase_rad, center_mm)
    params = {
        "sigma_mm": as_vec3(sigma_mm),
        "period_mm": float(period_mm),
        "phase_rad": float(phase_rad),
        "direction": as_vec3(fr.direction),
        "center_mm": as_vec3(center_mm),
        "seed": int(seed),
        "clumps": [{"center_mm": as_vec3(c), "sigma_mm": float(s), "share": float(w)}
                   for c, s, w in zip(centres, widths, shares, strict=True)],
    }
    return PrimitivePhantom("interferometer", comps, atoms=atoms, fringes=fr, params=params)


def sphere(
    atoms: float, *, radius_mm: float = 0.8, edge_mm: float = 0.02, center_mm: Vec3 = (0.0, 0.0, 0.0)
) -> PrimitivePhantom:
    """Uniform sphere with a smooth logistic edge (exact normalisation, see :class:`Sphere`).

    Args:
        atoms: total atom number.
        radius_mm: radius, mm.
        edge_mm: logistic edge width, mm (0: hard edge, not differentiable there).
        center_mm: (3,) centre, mm.
    """
    s = Sphere(center_mm, radius_mm, edge_mm)
    return PrimitivePhantom("sphere", [(1.0, s)], atoms=atoms, params=s.table())


def box(
    atoms: float,
    *,
    min_mm: Vec3 = (-0.5, -0.5, -0.5),
    max_mm: Vec3 = (0.5, 0.5, 0.5),
    edge_mm: float = 0.02,
) -> PrimitivePhantom:
    """Uniform box with a smooth logistic edge (mass exactly the box volume, see :class:`Box`).

    Args:
        atoms: total atom number.
        min_mm: (3,) lower corner, mm.
        max_mm: (3,) upper corner, mm.
        edge_mm: logistic edge width, mm (0: hard edge, not differentiable there).
    """
    b = Box(min_mm, max_mm, edge_mm)
    return PrimitivePhantom("box", [(1.0, b)], atoms=atoms, params=b.table())


def doe(atoms: float, *, voxel_size_mm: float = 0.02, density: float = 20.0) -> VolumePhantom:
    """The opaque "DOE" test object (``data/meshes/doe.stl``), voxelised, inside = ``density``.

    Rendered with ``emission-absorption`` (attenuation per unit density set by the renderer):
    opaque within ~50 µm of its surface at the default density. Relative units: ``atoms`` is
    ignored. Needs pyvista (imported here).

    Args:
        atoms: ignored (relative units).
        voxel_size_mm: voxel edge of the voxelisation, mm.
        density: value inside the object.
    """
    del atoms  # relative units
    mesh = make_doe_mesh()  # data/meshes/doe.stl is this mesh: the phantom needs no file
    mesh.points = mesh.points.astype(np.float32)  # as the STL holds it (the voxels are the same)
    extent = (2.52, 1.8, 0.6)  # x, y, z around the 2.3 × 1.6 × 0.4 mm word
    n = [int(round(e / voxel_size_mm)) for e in extent]
    origin = tuple(-(k - 1) / 2 * voxel_size_mm for k in n)
    volume = voxelize_mesh(mesh, n[::-1], origin, (voxel_size_mm,) * 3, supersample=2)
    volume = Volume(volume.data * np.float32(density), volume.origin_mm, volume.voxel_size_mm, "relative")
    return VolumePhantom(
        volume,
        name="doe",
        model="emission-absorption",
        params={"mesh": "data/meshes/doe.stl", "density": density},
    )


PHANTOMS: dict[str, Callable[..., Phantom]] = {
    "gaussian": gaussian,
    "fringes": fringes,
    "donut": donut,
    "spike": spike,
    "clouds": clouds,
    "interferometer": interferometer,
    "sphere": sphere,
    "box": box,
    "doe": doe,
}
