"""Fitting a field to a run: settings, data, ray pool, the loop, checkpoints, output directory."""
