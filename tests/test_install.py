"""The package as `pip install .` installs it (not editable): nothing reads the source checkout."""

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from pathlib import Path
import recon
from recon.fitting.poolcache import tracing_code_version
from recon.simulation.named import doe
assert Path(recon.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), recon.__file__
assert len(tracing_code_version()) == 32
print(float(doe(1.0, voxel_size_mm=0.05).volume.data.sum()))
"""


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None,
                    reason="needs setuptools to build the wheel")
def test_the_built_wheel_works_outside_the_checkout(tmp_path):
    """Build the wheel, unpack it away from the checkout and use it from there: the DOE phantom
    (once read from data/meshes/) and the tracing code's hash come from the installed files."""
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(wheel_dir)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheel_dir.glob("recon-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    assert not (site / "data").exists()  # the checkout's data/ is not installed
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(site)], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    from recon.simulation.named import doe

    inside = float(run.stdout.strip().splitlines()[-1])
    assert inside == pytest.approx(float(doe(1.0, voxel_size_mm=0.05).volume.data.sum()), rel=1e-12)


def test_the_doe_phantom_is_the_voxelised_reference_mesh_file():
    """data/meshes/doe.stl (for `recon mesh --compare`) and the phantom built in code agree voxelwise."""
    import pyvista as pv

    from recon.simulation.named import doe
    from recon.simulation.voxelize import voxelize_mesh

    phantom = doe(1.0, voxel_size_mm=0.04, density=1.0).volume
    mesh = pv.read(str(ROOT / "data" / "meshes" / "doe.stl"))
    read = voxelize_mesh(mesh, phantom.shape, phantom.origin_mm, phantom.voxel_size_mm, supersample=2)
    assert np.array_equal(read.data, phantom.data)
