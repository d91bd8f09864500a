"""The package as `pip install .` installs it (not editable): nothing reads the source checkout."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` of the checkout (no dependencies, no build isolation: offline), built once."""
    wheel_dir = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(wheel_dir)],
                           capture_output=True, text=True, cwd=wheel_dir)
    assert build.returncode == 0, build.stderr
    (built,) = wheel_dir.glob("recon-*.whl")
    return built


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
def test_the_built_wheel_works_outside_the_checkout(tmp_path, wheel):
    """Build the wheel, unpack it away from the checkout and use it from there: the DOE phantom
    (once read from data/meshes/) and the tracing code's hash come from the installed files."""
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


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None,
                    reason="needs setuptools to build the wheel")
@pytest.mark.skipif(importlib.util.find_spec("ensurepip") is None,
                    reason="needs ensurepip to make a virtual environment with pip (Debian: python3-venv)")
def test_recon_installed_from_the_wheel_in_a_fresh_venv_simulates_and_fits(tmp_path, tiny_system_file,
                                                                            wheel):
    """As a user installs it: `pip install recon-*.whl` into a new virtual environment (the test's own
    third-party packages lent by a path file, recon itself only from the wheel), then the installed
    `recon` command simulates the DOE phantom through a one-mirror instrument and fits it."""
    import sysconfig
    import venv

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # torch, numpy, … from this environment; its .pth files (an editable recon) are not processed
    Path(site, "lent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECON_POOL_CACHE": str(tmp_path / "pools")}
    env.pop("PYTHONPATH", None)
    # --force-reinstall: the lent packages hold this environment's own (editable) recon of the same
    # version, which pip would otherwise take as already installed
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall",
                              "-q", str(wheel)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert install.returncode == 0, install.stderr
    recon = env_dir / "bin" / "recon"
    found = subprocess.run([python, "-c", "import recon; print(recon.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=env)
    assert found.returncode == 0, found.stderr
    where = found.stdout.strip()
    assert Path(where).resolve().is_relative_to(Path(site).resolve()), where
    run = tmp_path / "doe_run"
    sim = subprocess.run([recon, "simulate", "--system", str(tiny_system_file), "--phantom", "doe",
                          "--atoms", "1e6", "--photons-per-atom", "2000", "--samples", "2",
                          "--step-mm", "0.05", "--seed", "1", "--out", str(run)],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert sim.returncode == 0, sim.stderr
    assert (run / "run.toml").is_file() and (run / "truth.tif").is_file()
    fit = subprocess.run([recon, "fit", "--views", str(run), "--out", str(tmp_path / "fit"), "--steps", "8",
                          "--quiet"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert fit.returncode == 0, fit.stderr
    assert (tmp_path / "fit" / "density.tif").is_file()
    metrics = json.loads((tmp_path / "fit" / "metrics.json").read_text())
    assert metrics["atoms"] > 0 and metrics["steps"] >= 1
