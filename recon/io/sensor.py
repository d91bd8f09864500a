r"""The sensor model: photon noise, dark current, read noise, gain, offset, quantisation, saturation.

REFERENCE §2:

.. math::

    \mathrm{ADU} = \operatorname{clip}\Big(\operatorname{round}\Big(
        \frac{\operatorname{Poisson}(e + d) + \mathcal{N}(0, \sigma_{read}^2)}{g} + o\Big),
        0, 2^{bits} - 1\Big)

with ``e`` the expected photoelectrons of a pixel, ``d`` the expected dark electrons, ``g`` the
gain (e⁻/ADU) and ``o`` the offset (ADU). The quantum efficiency is part of the optical weights
already (the renderer returns *photoelectrons*), so it is never applied here.

The sensor numbers come from the system file (``[cameras.sensor]``). This module does not import
:mod:`optics`: every function takes any object with the attributes of :class:`SensorSpec`
(``optics.camera.Sensor`` has them) and converts it with :func:`as_sensor_spec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from recon.errors import ConfigError, DataError

__all__ = [
    "NOISE_MODELS",
    "SensorSpec",
    "adu_to_electrons",
    "as_sensor_spec",
    "binomial_split",
    "simulate_adu",
]


NOISE_MODELS = ("poisson", "none")


@dataclass(frozen=True)
class SensorSpec:
    """The sensor numbers needed to simulate and to read frames (documented defaults).

    Attributes:
        gain_e_per_adu: photoelectrons per ADU (> 0).
        offset_adu: black level added to every pixel, ADU (≥ 0).
        bit_depth: ADC bits, 1–32; values clip at ``2^bits − 1``.
        read_noise_e: read noise, e⁻ RMS (≥ 0).
        dark_current_e: expected dark electrons per pixel in one exposure (≥ 0; default 0). Not a
            rate: multiply the rate by the exposure time before putting it here.
        width_px: sensor columns, or None when unknown (then ROIs are not checked against it).
        height_px: sensor rows, or None when unknown.
    """

    gain_e_per_adu: float = 1.0
    offset_adu: float = 0.0
    bit_depth: int = 16
    read_noise_e: float = 0.0
    dark_current_e: float = 0.0
    width_px: int | None = None
    height_px: int | None = None

    def __post_init__(self) -> None:
        checks = (
            (math.isfinite(self.gain_e_per_adu) and self.gain_e_per_adu > 0, "gain_e_per_adu", "> 0"),
            (math.isfinite(self.offset_adu) and self.offset_adu >= 0, "offset_adu", "≥ 0"),
            (
                isinstance(self.bit_depth, int) and not isinstance(self.bit_depth, bool)
                and 1 <= self.bit_depth <= 32,
                "bit_depth",
                "an integer in 1–32",
            ),
            (math.isfinite(self.read_noise_e) and self.read_noise_e >= 0, "read_noise_e", "≥ 0"),
            (math.isfinite(self.dark_current_e) and self.dark_current_e >= 0, "dark_current_e", "≥ 0"),
            (self.width_px is None or self.width_px >= 1, "width_px", "≥ 1"),
            (self.height_px is None or self.height_px >= 1, "height_px", "≥ 1"),
        )
        for ok, name, expected in checks:
            if not ok:
                raise ConfigError(
                    f"SensorSpec: {name} must be {expected}, got {getattr(self, name)!r}; "
                    "fix the sensor numbers in the system file"
                )

    @property
    def saturation_adu(self) -> int:
        """Largest value the ADC can report, ``2^bits − 1``."""
        return 2**self.bit_depth - 1

    @property
    def read_variance_e2(self) -> float:
        """Read-noise variance, e⁻²."""
        return self.read_noise_e**2

    @classmethod
    def from_sensor(cls, sensor: object) -> SensorSpec:
        """The numbers of any sensor-like object (e.g. ``optics.camera.Sensor``).

        ``gain_e_per_adu``, ``offset_adu`` and ``bit_depth`` are required; the others default as
        in the class.

        Raises:
            ConfigError: a required attribute is missing.
        """
        values = {}
        for f in fields(cls):
            if hasattr(sensor, f.name):
                values[f.name] = getattr(sensor, f.name)
            elif f.name in ("gain_e_per_adu", "offset_adu", "bit_depth"):
                raise ConfigError(
                    f"SensorSpec.from_sensor: {type(sensor).__name__} has no '{f.name}'; "
                    "pass a SensorSpec or an optics Sensor"
                )
        for name in ("gain_e_per_adu", "offset_adu", "read_noise_e", "dark_current_e"):
            if name in values:
                values[name] = float(values[name])
        for name in ("bit_depth", "width_px", "height_px"):
            if values.get(name) is not None:
                values[name] = int(values[name])
        return cls(**values)


def as_sensor_spec(sensor: object) -> SensorSpec:
    """``sensor`` as a :class:`SensorSpec` (returned unchanged when it is one already)."""
    return sensor if isinstance(sensor, SensorSpec) else SensorSpec.from_sensor(sensor)


def simulate_adu(
    expected_e: torch.Tensor,
    sensor: object,
    *,
    generator: torch.Generator | None = None,
    noise: str = "poisson",
) -> torch.Tensor:
    """One exposure of the sensor.

    Args:
        expected_e: (...) expected photoelectrons per pixel (finite, ≥ 0), QE already applied.
        sensor: a :class:`SensorSpec` or any object with its attributes; ``dark_current_e`` is
            added to the expected electrons.
        generator: random generator on the device of ``expected_e`` (explicit seeds make runs
            reproducible); None uses torch's global generator.
        noise: ``"poisson"``: photon and dark shot noise, Gaussian read noise, rounded and
            clipped to ``[0, 2^bits − 1]``; returned as ``torch.uint8`` (``bit_depth`` ≤ 8, as
            8-bit cameras write), ``torch.uint16`` (≤ 16; torch implements few operations on it:
            use ``.numpy()`` or ``.to(torch.int32)``) or ``torch.int64``. ``"none"``: the
            expected ADU, ``(e + dark)/gain + offset``, as float32, neither rounded nor clipped
            (the linear response: a value above ``2^bits − 1`` is kept, and
            :func:`adu_to_electrons` marks it saturated as it would a measured one).

    Returns:
        (...) ADU.

    Raises:
        ConfigError: unknown ``noise``.
        DataError: ``expected_e`` holds negative or non-finite values.

    Not differentiable (sampling, rounding); ``noise="none"`` is, but returns a new tensor.
    """
    if noise not in NOISE_MODELS:
        raise ConfigError(f"simulate_adu: noise must be one of {', '.join(NOISE_MODELS)}, got {noise!r}")
    spec = as_sensor_spec(sensor)
    lam = expected_e.to(torch.float64) + spec.dark_current_e
    if lam.numel() and not (bool(torch.isfinite(lam).all()) and float(lam.min()) >= 0.0):
        raise DataError(
            "simulate_adu: expected_e holds negative or non-finite values; the expected "
            "photoelectrons must be finite and ≥ 0"
        )
    if noise == "none":
        return (lam / spec.gain_e_per_adu + spec.offset_adu).to(torch.float32)
    electrons = torch.poisson(lam, generator=generator)
    read = torch.randn(lam.shape, generator=generator, dtype=torch.float64, device=lam.device)
    adu = torch.round((electrons + spec.read_noise_e * read) / spec.gain_e_per_adu + spec.offset_adu)
    adu = adu.clamp(0.0, float(spec.saturation_adu))
    if spec.bit_depth <= 8:
        return adu.to(torch.uint8)
    return adu.to(torch.uint16 if spec.bit_depth <= 16 else torch.int64)


def adu_to_electrons(
    adu: torch.Tensor, sensor: object, dark_adu: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Photoelectrons of measured frames, and the pixels that saturated.

    With a dark frame (the mean of dark exposures, ADU) the electrons are
    ``(adu − dark_adu) · gain`` (the dark frame holds the offset and the dark current); without
    one they are ``(adu − offset) · gain − dark_current_e``.

    Args:
        adu: (..., h, w) raw values, any integer or float dtype.
        sensor: a :class:`SensorSpec` or any object with its attributes.
        dark_adu: (h, w) or broadcastable mean dark frame, ADU; None subtracts the offset.

    Returns:
        electrons: (..., h, w) float32 photoelectrons (slightly negative values are read noise;
            NaN stays NaN).
        saturated: (..., h, w) bool, pixels at or above ``2^bits − 1`` (they carry no information).
    """
    spec = as_sensor_spec(sensor)
    values = adu.to(torch.float64)
    saturated = values >= spec.saturation_adu
    if dark_adu is not None:
        electrons = (values - dark_adu.to(device=values.device, dtype=torch.float64)) * spec.gain_e_per_adu
    else:
        electrons = (values - spec.offset_adu) * spec.gain_e_per_adu - spec.dark_current_e
    return electrons.to(torch.float32), saturated


def binomial_split(
    counts: torch.Tensor, generator: torch.Generator | None = None, *, read_noise_e: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Two statistically independent halves of photoelectron counts (binomial thinning, p = ½).

    For ``k ~ Poisson(λ)``, ``a ~ Binomial(k, ½)`` and ``b = k − a`` are independent
    ``Poisson(λ/2)`` (REFERENCE §2): two half data sets with every view and every pixel, for
    split-halves FSC from one exposure.

    Measured photoelectrons also carry read noise ``n ~ N(0, σ²)`` (σ including a subtracted dark
    frame's noise), so they are neither integers nor non-negative. They are rounded, and a
    negative value is thinned by its magnitude (``a = sign(k)·Binomial(|k|, ½)``), so both halves
    keep the mean ``k/2`` without the bias of clipping at 0. Thinning ``k = s + n`` leaves the
    read noise shared between the halves: for bright pixels ``Cov(a, b) ≈ σ²/4``, which would
    make the two half reconstructions correlate beyond the signal. With ``read_noise_e = σ`` an
    independent ``ε ~ N(0, σ²/4)`` is added to one half and taken from the other, which cancels
    that covariance exactly for bright pixels and leaves a small anti-correlation
    (``−E|k|/4``) for dark ones:

    .. math::

        a' = a + ε,\quad b' = b − ε,\qquad E[a'] = E[b'] = λ/2,\quad
        \operatorname{Var}(a') = λ/2 + σ^2/2.

    Each half is then Poisson(λ/2) plus Gaussian read noise of ``σ/√2``: fit it with that read
    noise. ``a' + b'`` equals the rounded counts.

    Args:
        counts: (...) photoelectrons (finite); integer or float dtype.
        generator: random generator on the device of ``counts``.
        read_noise_e: σ of the read noise in ``counts``, e⁻ (0: counts are pure Poisson).

    Returns:
        (a, b): two float32 tensors like ``counts``.

    Raises:
        DataError: ``counts`` holds NaN or inf (mask those pixels first), or ``read_noise_e < 0``.
    """
    k = counts.to(torch.float64)
    if k.numel() and not bool(torch.isfinite(k).all()):
        raise DataError("binomial_split: counts hold NaN or inf; set masked pixels to 0 before splitting")
    if not read_noise_e >= 0:
        raise DataError(f"binomial_split: read_noise_e must be ≥ 0, got {read_noise_e!r}")
    k = k.round()
    half = torch.sign(k) * torch.binomial(k.abs(), torch.full_like(k, 0.5), generator=generator)
    other = k - half
    if read_noise_e > 0:
        eps = torch.randn(k.shape, dtype=k.dtype, device=k.device, generator=generator) * (read_noise_e / 2)
        half, other = half + eps, other - eps
    return half.to(torch.float32), other.to(torch.float32)
