"""A run with a known spot shared by the inspect tests."""

import numpy as np

from recon.io.sensor import SensorSpec

SENSOR = SensorSpec(gain_e_per_adu=1.0, offset_adu=100.0, bit_depth=12, read_noise_e=3.0,
                    width_px=128, height_px=64)


def gaussian_spot(h, w, total, sigma=3.0):
    v, u = np.mgrid[0:h, 0:w]
    g = np.exp(-((u - w / 2) ** 2 + (v - h / 2) ** 2) / (2 * sigma**2))
    return total * g / g.sum()
