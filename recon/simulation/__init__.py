"""Simulation with known truth: phantoms, simulated runs, calibration target sets, the DOE object."""
