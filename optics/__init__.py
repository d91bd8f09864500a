"""Differentiable geometric optics of single-camera multi-view imagers (PyTorch)."""
