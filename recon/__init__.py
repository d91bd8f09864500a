"""Reconstruction of 3D densities from single-shot multi-view images."""

__version__ = "0.1.0"
