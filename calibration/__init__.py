"""Calibration of the instrument: target images, bundle adjustment, self-calibration."""
