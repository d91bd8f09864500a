"""Simulated campaigns: a reproducible random walk, each shot's truth moved by its offset."""

import json

import numpy as np
import pytest
import torch

from recon.errors import ConfigError
from recon.io.volume import read_volume
from recon.simulation.campaign import campaign_truth, shot_name, simulate_campaign
from recon.simulation.phantom_file import load_phantom
from recon.simulation.phantoms import ShiftedPhantom
from tests.micro import write_micro_system

SIM = {"samples": 2, "step_mm": 0.04, "truth_voxel_mm": 0.05}


def test_shifted_phantom_is_the_base_moved():
    base = load_phantom("gaussian", atoms=1e6)
    offset = [0.03, -0.02, 0.01]
    moved = ShiftedPhantom(base, offset)
    points = torch.rand(100, 3, dtype=torch.float64) - 0.5
    shift = torch.tensor(offset, dtype=torch.float64)
    assert torch.equal(moved.density(points), base.density(points - shift))
    assert moved.total_atoms == base.total_atoms and moved.model == base.model
    assert np.allclose(np.subtract(moved.bounds_mm, base.bounds_mm), [offset, offset])
    assert moved.params["offset_mm"] == offset and moved.to_dict()["params"]["base"] == base.params
    with pytest.raises(ConfigError, match="3 finite numbers"):
        ShiftedPhantom(base, [0.0, float("nan"), 0.0])


def test_campaign_truth_is_a_reproducible_walk_from_the_phantoms_place():
    rows = campaign_truth(200, atoms=1e6, seed=4, drift_um=20.0, atom_spread=0.03)
    assert [r["shot"] for r in rows[:2]] == ["shot_0000", "shot_0001"] and rows[0]["offset_mm"] == [0.0] * 3
    assert rows == campaign_truth(200, atoms=1e6, seed=4, drift_um=20.0, atom_spread=0.03)
    assert rows != campaign_truth(200, atoms=1e6, seed=5, drift_um=20.0, atom_spread=0.03)
    steps = np.diff([r["offset_mm"] for r in rows], axis=0) * 1000
    assert 16 < steps.std() < 24 and abs(steps.mean()) < 3  # 597 draws of sd 20 µm
    atoms = np.array([r["atoms"] for r in rows])
    assert 0.024 < atoms.std() / 1e6 < 0.036 and abs(atoms.mean() / 1e6 - 1) < 0.01
    still = campaign_truth(3, atoms=1e6, seed=1, drift_um=0.0, atom_spread=0.0)
    assert all(r["offset_mm"] == [0.0] * 3 and r["atoms"] == 1e6 for r in still)


def test_simulate_campaign_writes_shots_whose_truth_moves_with_the_walk(tmp_path):
    system = write_micro_system(tmp_path / "micro.toml")
    phantom = tmp_path / "small.toml"  # well inside the 1.2 mm box: its centroid moves with it
    phantom.write_text('name = "small"\n[[gaussian]]\ncenter_mm = [0.0, 0.0, 0.0]\nsigma_mm = 0.12\n'
                       'weight = 1.0\n')
    out = tmp_path / "shots"
    summary = simulate_campaign(system, str(phantom), out, 3, atoms=1e6, seed=7, drift_um=40.0, **SIM)
    assert sorted(p.name for p in out.iterdir()) == ["shot_0000", "shot_0001", "shot_0002", "truth.csv"]
    lines = (out / "truth.csv").read_text().splitlines()
    assert lines[0] == "shot,atoms,offset_x_mm,offset_y_mm,offset_z_mm" and len(lines) == 4

    def centroid(i):
        vol = read_volume(out / shot_name(i) / "truth.tif")
        z, y, x = np.meshgrid(*(np.arange(n) for n in vol.data.shape), indexing="ij")
        w = vol.data / vol.data.sum()
        return np.array([(w * c).sum() for c in (x, y, z)]) * vol.voxel_size_mm + vol.origin_mm

    for i, row in enumerate(summary["truth"]):
        info = json.loads((out / shot_name(i) / "phantom.json").read_text())
        assert info["offset_mm"] == row["offset_mm"] and info["seed"] == 7 + i
        assert info["atoms_total"] == pytest.approx(row["atoms"])
        moved = centroid(i) - centroid(0)
        assert np.allclose(moved, row["offset_mm"], atol=1e-3)  # to 1 µm, on a 50 µm truth grid
    assert not list(tmp_path.glob(".shots.*"))  # written whole, no temporary left


def test_simulate_campaign_refuses_bad_requests_and_keeps_what_exists(tmp_path):
    system = write_micro_system(tmp_path / "micro.toml")
    for shots in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="--campaign"):
            simulate_campaign(system, "gaussian", tmp_path / "a", shots, **SIM)
    with pytest.raises(ConfigError, match="--drift-um"):
        simulate_campaign(system, "gaussian", tmp_path / "a", 2, drift_um=-1.0, **SIM)
    out = tmp_path / "kept"
    out.mkdir()
    (out / "note").write_text("mine")
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        simulate_campaign(system, "gaussian", out, 2, **SIM)
    with pytest.raises(ConfigError):  # an unknown phantom fails before anything replaces the old campaign
        simulate_campaign(system, "no-such-phantom", out, 2, overwrite=True, **SIM)
    assert (out / "note").read_text() == "mine" and not list(tmp_path.glob(".kept.*"))
