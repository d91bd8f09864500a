"""Small systems for optics tests."""

import torch

from optics.system import system_from_dict

SENSOR = {"width_px": 2001, "height_px": 1501, "pixel_pitch_um": 3.76, "quantum_efficiency": 0.77,
          "gain_e_per_adu": 1.0, "read_noise_e": 2.0, "offset_adu": 100.0, "bit_depth": 16}


def system_dict(lens=None, mirrors=None, windows=None, half_z=1.2):
    d = {
        "schema": "recon.system/1",
        "name": "test",
        "volume": {"min_mm": [-1.2, -1.2, -half_z], "max_mm": [1.2, 1.2, half_z]},
        "cameras": [{
            "name": "cam",
            "sensor": dict(SENSOR),
            "lens": lens or {"model": "thin", "focal_length_mm": 62.275, "f_number": 1.23,
                             "magnification": 0.215},
            "pose": {"position_mm": [0.0, 0.0, -351.926], "look_at_mm": [0.0, 0.0, 0.0],
                     "up": [0.0, 1.0, 0.0]},
        }],
    }
    if mirrors:
        d["mirrors"] = mirrors
    if windows:
        d["windows"] = windows
    return d


def make_system(dtype=torch.float64, **kw):
    return system_from_dict(system_dict(**kw), dtype=dtype)
