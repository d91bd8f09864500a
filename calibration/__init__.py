"""Calibration of the instrument: target images, bundle adjustment, self-calibration.

Modules: :mod:`optics.project` (point source → sensor, aperture-averaged spot centroids),
:mod:`calibration.perturb` (realistically wrong instruments, mirror errors),
:mod:`calibration.target` (target sets and their simulation), :mod:`calibration.spots` (spot
detection), :mod:`calibration.model` (learnable optical parameters), :mod:`calibration.bundle`
(bundle adjustment), :mod:`calibration.report` (outputs), :mod:`calibration.selfcal` (joint
refinement during a fit). Depends on :mod:`optics` only.
"""

from calibration.bundle import CalibrationConfig, CalibrationResult, Observations, calibrate, measure_spots
from calibration.model import FIT_GROUPS, OpticalParameters, PriorConfig, parse_fit_groups
from calibration.perturb import MirrorErrors, mirror_errors, perturb_system
from calibration.selfcal import SelfCalibration
from calibration.spots import Spot, detect_spot
from calibration.target import TargetSpec, read_target_spec, simulate_point_exposure
from optics.project import SpotSamples, aperture_pattern, spot_centroids, trace_point_to_sensor

__all__ = [
    "FIT_GROUPS",
    "CalibrationConfig",
    "CalibrationResult",
    "MirrorErrors",
    "Observations",
    "OpticalParameters",
    "PriorConfig",
    "SelfCalibration",
    "Spot",
    "SpotSamples",
    "TargetSpec",
    "aperture_pattern",
    "calibrate",
    "detect_spot",
    "measure_spots",
    "mirror_errors",
    "parse_fit_groups",
    "perturb_system",
    "read_target_spec",
    "simulate_point_exposure",
    "spot_centroids",
    "trace_point_to_sensor",
]
