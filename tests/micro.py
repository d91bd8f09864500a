"""A micro instrument and run for reliability tests: one direct 27×27-pixel view, fits in seconds."""

from __future__ import annotations

from pathlib import Path

import torch

from optics.system import save_system, system_from_dict
from recon.fitting.data import load_fit_data
from recon.fitting.raypool import build_ray_pool
from tests.optics.helpers import system_dict

# Small hash grid: 2 levels, 1024-entry tables, 16-wide MLP (the fit's whole state in ~20 kB),
# fitted by Adam; max_passes high so that the tests' step counts (up to 300 steps of 64 of the
# 693 training pixels, 28 passes) are what runs: these tests are about the loop, not its stop.
FIT_TOML = """\
field = "hashgrid"
max_passes = 1000
batch_pixels = 64
pool_samples = 2
step_mm = 0.05
checkpoint_every = 10
log_every = 1000
voxel_size_mm = 0.1
[field_options]
hidden_width = 16
[field_options.encoding]
n_levels = 2
log2_hashmap_size = 10
base_resolution = 8
"""


def micro_system_dict() -> dict:
    """A 1.2 mm box seen by a thin lens at magnification 0.05 (in focus), no mirrors."""
    lens = {"model": "thin", "focal_length_mm": 62.275, "f_number": 1.23, "magnification": 0.05}
    d = system_dict(lens=lens)
    d["cameras"][0]["pose"]["position_mm"] = [0.0, 0.0, -62.275 * 1.05 / 0.05]
    d["volume"] = {"min_mm": [-0.6] * 3, "max_mm": [0.6] * 3}
    return d


def write_micro_system(path: Path) -> Path:
    """Write the micro system file to ``path``."""
    save_system(system_from_dict(micro_system_dict(), dtype=torch.float64), path)
    return path


def make_micro_run(directory: Path, *, seed: int = 3) -> Path:
    """Simulate the micro run (a Gaussian cloud, Poisson noise, one dark frame) into ``directory/run``."""
    from recon.simulation.simulate import simulate_run

    system = write_micro_system(directory / "micro.toml")
    run = directory / "run"
    simulate_run(system, "gaussian", run, atoms=1e6, samples=2, step_mm=0.04, truth_voxel_mm=0.1, seed=seed)
    return run


def make_micro_case(root: Path) -> dict:
    """The micro run and :data:`FIT_TOML` written in ``root``: ``{"run", "cfg", "root"}``."""
    cfg = root / "fit.toml"
    cfg.write_text(FIT_TOML)
    return {"run": make_micro_run(root), "cfg": cfg, "root": root}


def make_micro_pool_case(root: Path) -> dict:
    """:func:`make_micro_case` and its data with a pool of 2 samples (seed 0): adds "data", "pool"."""
    case = make_micro_case(root)
    data, _, _ = load_fit_data(case["run"])
    return {**case, "data": data, "pool": build_ray_pool(data, samples=2, seed=0)}


class LogLines:
    """A progress display that keeps the lines it is given and ignores the rest (for assertions)."""

    def __init__(self, cfg=None):
        self.cfg, self.lines = cfg, []

    def log(self, text):
        self.lines.append(text)

    def start(self, *args):
        pass

    def update(self, *args):
        pass

    def stop(self):
        pass
