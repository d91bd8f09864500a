"""Fixtures shared by the tests in this folder."""

import numpy as np
import pytest

from recon.io.runwriter import write_run
from tests.recon.io.runs import ROIS, make_frames, make_spec


@pytest.fixture
def run_dir(tmp_path):
    """A small run: two views with two shots each and one-page dark frames."""
    frames = {name: make_frames(roi, seed=i) for i, (name, roi) in enumerate(ROIS.items())}
    darks = {name: np.full((1, roi[3], roi[2]), 100, np.uint16) for name, roi in ROIS.items()}
    return write_run(tmp_path / "run", make_spec(), frames=frames, darks=darks,
                     extra_files={"system.toml": "# not read by these tests\n"})
