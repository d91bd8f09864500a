"""Self-calibration: the fit's loss, traced through the learnable optics, pulls a mirror toward the truth."""

from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from calibration.model import PriorConfig
from calibration.perturb import in_plane_axes, tilt_normal
from calibration.selfcal import SelfCalibration
from recon.cli import app
from recon.model.loss import data_loss
from recon.model.render import compact_rays, render_pixels
from recon.simulation.phantom_file import load_phantom
from recon.simulation.simulate import expected_views, simulation_regions
from tests.calibration.conftest import small_dome


def test_gradient_of_the_data_loss_points_toward_the_true_mirror():
    nominal = small_dome()
    prior = PriorConfig(tilt_deg=1.0)
    k, tilt_true = 1, torch.tensor([0.3, -0.2], dtype=torch.float64)  # degrees
    m = nominal.mirrors[k]
    n0 = m.normal / m.normal.norm()
    truth = replace(
        nominal,
        mirrors=tuple(
            replace(mm, normal=tilt_normal(n0, torch.deg2rad(tilt_true))) if i == k else mm
            for i, mm in enumerate(nominal.mirrors)
        ),
    )
    phantom = load_phantom("gaussian", atoms=2e5)
    regions = [r for r in simulation_regions(truth) if r.path == k + 1]
    measured = expected_views(
        truth.to(torch.float32), phantom.density, regions, photons_per_atom=200.0, samples=2, step_mm=0.05
    )
    x0, y0, w, h = regions[0].roi
    v, u = torch.meshgrid(torch.arange(h) + y0, torch.arange(w) + x0, indexing="ij")
    uv = torch.stack([u, v], -1).reshape(-1, 2).to(torch.float32)
    counts = measured[regions[0].name].reshape(-1)
    keep = counts > 0.05 * counts.max()
    uv, counts = uv[keep], counts[keep]
    sc = SelfCalibration(nominal, ("mirrors",), prior=prior, n_pixels=len(uv))
    gen = torch.Generator().manual_seed(0)
    traced, order = sc.trace(uv, torch.zeros(len(uv), dtype=torch.long), 8, generator=gen)
    pred = render_pixels(
        phantom.density, compact_rays(traced), len(uv), photons_per_atom=200.0, step_mm=0.04, generator=gen
    )
    loss = data_loss(pred, counts[order], torch.ones(len(uv)), 2.0) + sc.prior_term()
    loss.backward()
    grad = sc.optics.mirror_tilt.grad[k]  # in units of the prior σ (1°)
    u_ax, v_ax = in_plane_axes(n0)
    assert torch.allclose(tilt_normal(n0, torch.deg2rad(tilt_true)), truth.mirrors[k].normal)
    # the descent direction −grad points toward the true tilt (in the same in-plane axes)
    cos = float(torch.dot(-grad, tilt_true) / (grad.norm() * tilt_true.norm()))
    assert cos > 0.8, (grad, tilt_true)
    others = torch.cat([sc.optics.mirror_tilt.grad[:k], sc.optics.mirror_tilt.grad[k + 1 :]])
    assert float(others.abs().max()) < 1e-6  # other mirrors' views are not in the batch
    assert u_ax.shape == (3,)


def test_fit_refine_options_are_checked(tmp_path, tiny_run):
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "fit",
            "--views",
            str(tiny_run),
            "--out",
            str(tmp_path / "f"),
            "--steps",
            "5",
            "--refine",
            "mirrors,distortion",
        ],
    )
    assert res.exit_code == 2 and "distortion" in res.output
    res = runner.invoke(
        app,
        ["fit", "--views", str(tiny_run), "--out", str(tmp_path / "f"), "--steps", "5", "--refine", "lens"],
    )
    assert res.exit_code == 2 and "fit --refine" in res.output


@pytest.mark.slow
def test_fit_with_refine_moves_the_mirrors_toward_the_truth_and_writes_them(tmp_path, dome_files):
    """A run simulated through the perturbed dome (0.5° σ tilts), fitted with the nominal one.

    With one mirror and the direct view, a mirror's tilt and the cloud's position along the direct
    view are degenerate and the refinement may wander away from the truth; four mirrors pin it.
    """
    import math
    import shutil

    from optics.system import load_system
    from recon.simulation.simulate import simulate_run

    nominal_path, perturbed_path, nominal, perturbed = dome_files
    run = tmp_path / "run"
    simulate_run(perturbed_path, "gaussian", run, atoms=1e6, photons_per_atom=200.0, samples=2, step_mm=0.04,
                 truth_voxel_mm=0.05, seed=3)
    shutil.copy(nominal_path, run / "system.toml")  # the fit is given the nominal optics
    cfg = tmp_path / "fit.toml"
    cfg.write_text('field = "voxel"\nbatch_pixels = 512\nrefine_warmup = 40\nrefine_lr = 0.02\n')
    out = tmp_path / "f"
    res = CliRunner().invoke(app, ["fit", "--views", str(run), "--out", str(out), "--steps", "100",
                                   "--config", str(cfg), "--refine", "mirrors", "--quiet"])
    assert res.exit_code == 0, res.output
    refined = load_system(out / "refined_system.toml", dtype=torch.float64)
    assert [m.name for m in refined.mirrors] == [m.name for m in nominal.mirrors]

    def unit(mirror):
        return mirror.normal.double() / mirror.normal.double().norm()

    def tilt_errors(system) -> list[float]:
        return [math.degrees(math.acos(min(1.0, float(torch.dot(unit(a), unit(b))))))
                for a, b in zip(system.mirrors, perturbed.mirrors, strict=True)]

    before, after = tilt_errors(nominal), tilt_errors(refined)
    rms = [math.sqrt(sum(e * e for e in errors) / len(errors)) for errors in (before, after)]
    assert rms[1] < 0.6 * rms[0], (before, after)  # 60 refinement steps: most of the way to the truth
    worst = before.index(max(before))
    assert after[worst] < 0.6 * before[worst], (before, after)
    assert (out / "refinement.json").is_file() and "refined system" in res.output
