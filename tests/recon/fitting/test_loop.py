"""The fit loop's parts: signals that stop a job, the device, the starting density, and a short fit."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import signal
import threading
import time

import pytest
import torch

from optics.system import system_from_dict
from recon.errors import BackendUnavailableError, FitError
from recon.fitting.checkpoint import read_checkpoint
from recon.fitting.config import FitConfig, field_factory, load_fit_config
from recon.fitting.data import FitData, ViewData, load_fit_data
from recon.fitting.loop import (
    FitInterrupted,
    FitResult,
    StopOnSignals,
    _traced_pool,
    estimate_atoms,
    resolve_device,
    run_fit,
)
from recon.fitting.raypool import build_ray_pool, rays_per_sample
from recon.model.loss import data_loss
from recon.model.render import render_pixels
from tests.conftest import slow
from tests.micro import make_micro_case, micro_system_dict

# -------------------------------------------------------------------------------- StopOnSignals


def _send_and_wait(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(5)  # the handler raises long before this ends


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_in_the_block_becomes_fit_interrupted(sig, status):
    t0 = time.monotonic()
    with pytest.raises(FitInterrupted) as info, StopOnSignals("fit stopped while tracing"):
        _send_and_wait(sig)
    assert time.monotonic() - t0 < 4
    assert str(info.value) == f"fit stopped while tracing ({signal.Signals(sig).name})"
    assert info.value.exit_status == status
    assert isinstance(info.value, KeyboardInterrupt)  # what the CLI turns into "interrupted: …"


def test_the_message_may_change_while_the_block_runs():
    expected = r"^writing outputs \(SIGTERM\)$"
    with pytest.raises(FitInterrupted, match=expected), StopOnSignals("tracing") as stop:
        stop.message = "writing outputs"
        _send_and_wait(signal.SIGTERM)


def test_the_previous_handlers_come_back_after_the_block():
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    old_term = signal.signal(signal.SIGTERM, mine)
    old_int = signal.getsignal(signal.SIGINT)
    try:
        with StopOnSignals("x"):
            assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is old_int
        with pytest.raises(FitInterrupted), StopOnSignals("x"):
            _send_and_wait(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is mine  # also after it raised
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old_term)


def test_outside_the_main_thread_it_does_nothing():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    failures, inside = [], []

    def worker():
        try:
            with StopOnSignals("x") as stop:
                handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
                inside.append((*handlers, dict(stop._old)))
        except BaseException as err:  # noqa: BLE001 - reported below
            failures.append(err)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=30)
    assert failures == [] and inside == [(*before, {})]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_fit_interrupted_carries_128_plus_the_signal():
    assert FitInterrupted("m").exit_status == 130
    assert FitInterrupted("m", signal.SIGTERM).exit_status == 143
    assert FitInterrupted("m", signal.SIGHUP).exit_status == 129


# ------------------------------------------------------------------------------- resolve_device


def test_devices_resolve_to_what_this_machine_has(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(BackendUnavailableError) as info:
        resolve_device("cuda")
    assert "torch sees no CUDA device; pass --device cpu (or auto)" in str(info.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") == resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit cpu stays on the cpu


# ------------------------------------------------------------------------------- estimate_atoms


def _centre_view(photons_per_atom=200.0):
    """The micro instrument's direct view, cropped to its central 9×9 pixels (all see the box)."""
    system = system_from_dict(micro_system_dict())
    zeros, mask = torch.zeros(1, 9, 9), torch.ones(1, 9, 9, dtype=torch.bool)
    return FitData(system, (ViewData("direct", 0, (996, 746, 9, 9), zeros, mask),), photons_per_atom)


@pytest.fixture(scope="module")
def tiny_pool():
    data = _centre_view()
    return data, build_ray_pool(data, samples=2, seed=0)


@pytest.mark.parametrize("photons_per_atom", [200.0, None])
def test_the_estimate_of_a_uniform_box_is_its_density(tiny_pool, photons_per_atom):
    data, pool = tiny_pool
    data = dataclasses.replace(data, photons_per_atom=photons_per_atom)
    density = 3.0e5  # atoms/mm³, uniform in the box
    y = photons_per_atom or 4 * math.pi
    uniform = lambda pts: torch.full(pts.shape[:-1], density)  # noqa: E731
    expected = render_pixels(uniform, pool.gather(torch.arange(81)), 81, photons_per_atom=y, step_mm=0.05,
                             jitter=False)
    assert float(expected.min()) > 0  # every pixel sees the box
    shots = 3
    measured = dataclasses.replace(pool, summed_electrons=shots * expected, n_frames=torch.full((81,), shots))
    estimate = estimate_atoms(data, measured)
    assert density / 2 < estimate < 2 * density
    assert estimate == pytest.approx(density, rel=0.05)  # a uniform box is what the estimate assumes


def test_the_estimate_scales_with_the_signal_and_stays_positive_without_any(tiny_pool):
    data, pool = tiny_pool
    ones = torch.ones(81)
    one = estimate_atoms(data, dataclasses.replace(pool, summed_electrons=100 * ones, n_frames=ones))
    two = estimate_atoms(data, dataclasses.replace(pool, summed_electrons=200 * ones, n_frames=ones))
    assert two == pytest.approx(2 * one, rel=1e-6)
    none = estimate_atoms(data, dataclasses.replace(pool, summed_electrons=0 * ones, n_frames=0 * ones))
    assert math.isfinite(none) and 0 < none < one  # a field must start from a positive density


# -------------------------------------------------------------------------------------- run_fit


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    case = make_micro_case(tmp_path_factory.mktemp("loop"))
    data, _, _ = load_fit_data(case["run"])
    return {**case, "data": data}


class _Log:
    def __init__(self):
        self.lines, self.updates, self.calls = [], [], []

    def log(self, text):
        self.lines.append(text)

    def start(self, total, done=0):
        self.calls.append(("start", total, done))

    def update(self, step, loss, rays_per_s):
        self.updates.append((step, loss, rays_per_s))

    def stop(self):
        self.calls.append(("stop",))


@slow
def test_a_short_fit_returns_its_state_and_lowers_the_loss(micro, tmp_path):
    cfg = load_fit_config(micro["cfg"], steps=40, device="cpu", seed=2)
    log, initial = _Log(), []

    def make_field(*args):
        made = field_factory(*args)
        initial.append(copy.deepcopy(made))
        return made

    result = run_fit(micro["data"], cfg, tmp_path, make_field=make_field, progress=log)
    assert isinstance(result, FitResult) and result.refined_system is None and result.refinement is None
    assert result.final_gain is None and result.predicted is None  # Adam fits its gain (log_gain)
    assert result.held_out_pixels > 0 and result.max_steps == 40 and result.mean_density > 0
    state = result.state
    assert state.step == 40 and len(state.losses) == 40 and all(math.isfinite(x) for x in state.losses)
    pool = result.pool
    pixels = torch.arange(pool.n_pixels)

    def loss_of_all_pixels(field):
        with torch.no_grad():
            pred = render_pixels(field, pool.gather(pixels), len(pixels), photons_per_atom=200.0,
                                 step_mm=cfg.step_mm, jitter=False)
            return float(data_loss(pred, pool.summed_electrons, pool.n_frames, pool.read_noise_e))

    assert loss_of_all_pixels(result.field) < 0.92 * loss_of_all_pixels(initial[0])  # it learns
    assert state.batch_pixels == 64 and state.rays_rendered > 0 and state.elapsed_s > 0
    assert result.device == torch.device("cpu") and result.photons_per_atom == 200.0
    assert result.refined_system is None and result.refinement is None
    assert math.isfinite(result.mean_density) and result.mean_density > 0
    assert result.pool.n_pixels == 27 * 27
    with torch.no_grad():  # the cloud is at the box centre: the fit raised the centre over a corner
        corner = 0.9 * result.field.box_max_mm.reshape(1, 3)

        def contrast(field):
            return float(field(torch.zeros(1, 3))) / float(field(corner))

        assert contrast(result.field) > 1.0 and contrast(result.field) > 1.05 * contrast(initial[0])
    saved = read_checkpoint(tmp_path / "checkpoint.pt")  # the last step is always checkpointed
    assert saved["state"]["step"] == 40 and saved["state"]["losses"] == state.losses
    assert log.calls == [("start", 40, 0), ("stop",)] and [u[0] for u in log.updates] == list(range(1, 41))
    assert any(line.startswith("pool: ") for line in log.lines)


def test_signal_on_masked_pixels_is_no_signal(micro, tmp_path):
    """Photoelectrons only where the mask says the pixels are unusable: refused as no signal."""
    view = micro["data"].views[0]
    mask = torch.ones_like(view.mask)
    mask[0, :, :13] = False
    electrons = torch.where(mask, 0.0, view.electrons.abs() + 1.0)
    masked = dataclasses.replace(view, electrons=electrons, mask=mask)
    data = dataclasses.replace(micro["data"], views=(masked,))
    built = []
    with pytest.raises(FitError, match="every usable pixel is zero"):
        run_fit(data, load_fit_config(micro["cfg"], device="cpu"), tmp_path,
                make_field=lambda *a: built.append(a) or field_factory(*a))
    assert built == [] and list(tmp_path.iterdir()) == []  # refused before a field or a file was made


def test_a_fit_restores_the_signal_handlers_it_replaced(micro, tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    cfg = load_fit_config(micro["cfg"], steps=2, device="cpu")
    run_fit(micro["data"], cfg, tmp_path, make_field=field_factory)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_the_pace_line_extrapolates_a_steps_time_to_a_pass_and_the_step_limit():
    from recon.fitting.loop import FIRST_PASS_FACTOR, pace_line

    em = pace_line(0.3, step=2, per_pass=32, steps_left=254, em=True)
    assert em.startswith("update 2: 0.30 s; this first pass (with EM's sensitivities) ≈ 10 s")
    assert f"later passes ≈ {0.3 * 32 / FIRST_PASS_FACTOR:.0f} s" in em
    assert f"the step limit in ≤ {0.3 / FIRST_PASS_FACTOR * 254:.0f} s" in em
    cached = pace_line(0.3, step=2, per_pass=32, steps_left=254, em=True, sensitivities=False)
    assert cached.startswith("update 2: 0.30 s; a pass ≈ 10 s (32 updates each)") and "≤ 76 s" in cached
    adam = pace_line(2.0, step=2, per_pass=3000, steps_left=4000, em=False)
    assert adam.startswith("step 2: 2.00 s; a pass ≈ 100.0 min (3000 steps each)") and "≤ 2.2 h" in adam


@pytest.mark.parametrize("sampling", ["random", "sobol"])
def test_the_fits_pool_is_drawn_as_pool_sampling_says(sampling):
    data = _centre_view()
    lit = dataclasses.replace(data.views[0], electrons=torch.ones(1, 9, 9))  # the pool refuses empty frames
    data = dataclasses.replace(data, views=(lit,))
    cfg = FitConfig(pool_samples=4, pool_sampling=sampling)
    pool = _traced_pool(data, cfg, None, lambda text: None)
    expected = build_ray_pool(data, samples=4, seed=0, sampling=sampling,
                              rays_per_sample=rays_per_sample(data, cfg.defocused_rays))
    other = build_ray_pool(data, samples=4, seed=0, sampling="random" if sampling == "sobol" else "sobol",
                           rays_per_sample=rays_per_sample(data, cfg.defocused_rays))
    assert torch.equal(pool.rays.origins, expected.rays.origins)
    assert not torch.equal(pool.rays.origins, other.rays.origins[: len(pool.rays)])


def test_the_fits_pool_gives_its_bright_pixels_the_samples_pool_boost_e_says():
    data = _centre_view()
    light = torch.ones(1, 9, 9)
    light[0, 4, 4], light[0, 2, 3] = 25.0, 9.0  # at pool_boost_e = 10 e⁻: 3× the samples, and none more
    data = dataclasses.replace(data, views=(dataclasses.replace(data.views[0], electrons=light),))
    lines = []
    cfg = FitConfig(pool_samples=4, pool_boost_e=10.0)
    pool = _traced_pool(data, cfg, None, lines.append)
    plain = _traced_pool(data, dataclasses.replace(cfg, pool_boost_e=0.0), None, lambda text: None)
    per_pixel = lambda p: torch.bincount(p.rays.pixel // 4, minlength=81)  # noqa: E731
    grown = per_pixel(pool) - per_pixel(plain)
    assert abs(int(grown[4 * 9 + 4]) / int(per_pixel(plain)[4 * 9 + 4]) - 2) < 0.25  # about 3× its segments
    assert bool((grown[torch.arange(81) != 4 * 9 + 4] == 0).all())  # 9 e⁻ and 1 e⁻: below 10, no boost
    assert pool.boost is not None and plain.boost is None
    assert any("segments more for the 1 brightest pixels" in line for line in lines)
