"""Checkpoints: an exact round trip of field, optimiser and random states; refusals that name the cause."""

from __future__ import annotations

import dataclasses
import io
import math
import os
from dataclasses import asdict

import pytest
import torch

from optics.system import system_from_dict
from recon.errors import DataError
from recon.fitting.checkpoint import (
    FitState,
    check_resumable,
    data_fingerprint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from recon.fitting.config import FitConfig
from recon.fitting.data import FitData, ViewData
from tests.micro import micro_system_dict

CFG = FitConfig(field="voxel", seed=4, field_options={"voxel_resolution": [4, 4, 4]})


def _trained(seed: int = 0):
    """A small field after two Adam steps (so the optimiser holds moments), and a used generator."""
    torch.manual_seed(seed)
    field = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    optim = torch.optim.Adam(field.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(2):
        x = torch.rand(8, 3, generator=gen)
        optim.zero_grad()
        field(x).square().sum().backward()
        optim.step()
    return field, optim, gen


def _data(signal: float = 50.0, shots: int = 1, masked: int = 0, views: int = 1) -> FitData:
    system = system_from_dict(micro_system_dict())
    electrons = torch.full((shots, 6, 5), signal)
    mask = torch.ones(shots, 6, 5, dtype=torch.bool)
    mask.view(-1)[:masked] = False
    views = tuple(ViewData(f"v{i}", 0, (990, 740, 5, 6), electrons, mask) for i in range(views))
    return FitData(system, views, 200.0)


@pytest.fixture
def saved(tmp_path):
    """A checkpoint at step 12 and the random draws that follow its saving (generator and global)."""
    field, optim, gen = _trained()
    state = FitState(step=12, losses=[3.0, 2.5, 2.0], elapsed_s=1.5, rays_rendered=900, batch_pixels=32)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, field, optim, gen, CFG, state, data_key=data_fingerprint(_data()))
    after = {"gen": torch.rand(6, generator=gen), "global": torch.rand(6), "normal": torch.randn(3)}
    return {"path": path, "field": field, "optim": optim, "state": state, "after": after}


# ------------------------------------------------------------------------------------- round trip


def test_load_restores_field_optimiser_progress_and_every_random_state(saved):
    field, optim, gen = _trained(seed=9)  # other weights, moments and random states
    torch.manual_seed(123)
    state = load_checkpoint(saved["path"], field, optim, gen, CFG, data=_data())
    assert state == saved["state"]
    for key, value in saved["field"].state_dict().items():
        assert torch.equal(field.state_dict()[key], value), key
    theirs, ours = saved["optim"].state_dict(), optim.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]
    for index, moments in theirs["state"].items():
        for name, value in moments.items():
            mine = torch.as_tensor(ours["state"][index][name])
            assert torch.equal(mine, torch.as_tensor(value)), (index, name)
    # the next draws are those that followed the save: the fit goes on as if never stopped
    assert torch.equal(torch.rand(6, generator=gen), saved["after"]["gen"])
    assert torch.equal(torch.rand(6), saved["after"]["global"])
    assert torch.equal(torch.randn(3), saved["after"]["normal"])


def test_a_resumed_optimiser_takes_the_same_next_step(saved):
    field, optim, gen = _trained(seed=9)
    load_checkpoint(saved["path"], field, optim, gen, CFG)
    x = torch.rand(8, 3)
    for module, opt in ((saved["field"], saved["optim"]), (field, optim)):
        opt.zero_grad()
        module(x).square().sum().backward()
        opt.step()
    for (name, a), b in zip(saved["field"].state_dict().items(), field.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_read_returns_the_settings_progress_and_data_key(saved):
    payload = read_checkpoint(saved["path"])
    assert payload["format"] == "recon.checkpoint/1"
    assert payload["config"] == asdict(CFG)
    assert payload["state"] == asdict(saved["state"])
    assert payload["data_key"] == data_fingerprint(_data())
    assert payload["cuda_rng"] is None or isinstance(payload["cuda_rng"], list)


def _leaves(obj):
    if isinstance(obj, dict):
        assert all(isinstance(k, (str, int)) for k in obj), list(obj)
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj


def test_the_file_holds_only_what_weights_only_loading_allows(saved):
    raw = saved["path"].read_bytes()
    payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)  # raises on any other global
    kinds = {type(v) for v in _leaves(payload)}
    assert kinds <= {torch.Tensor, int, float, str, bool, type(None)}, kinds


def test_a_checkpoint_for_another_field_shape_is_one_line(saved):
    small = torch.nn.Linear(3, 1)
    with pytest.raises(DataError) as info:
        load_checkpoint(saved["path"], small, torch.optim.Adam(small.parameters()), torch.Generator(), CFG)
    message = str(info.value)
    assert "does not fit this field" in message and "\n" not in message


# -------------------------------------------------------------------------------- data fingerprint


def test_the_fingerprint_is_stable_and_says_what_it_counts():
    assert data_fingerprint(_data()) == data_fingerprint(_data())
    key = data_fingerprint(_data(views=2, shots=3))
    assert key.startswith("2 views, 60 px, 6 shots, 9.000000000e+03 e, content ")
    assert len(key.rsplit(" ", 1)[1]) == 16


def _flipped(data):
    """Each view's frames flipped left–right (the same pixels and total signal)."""
    views = []
    for v in data.views:
        ramp = v.electrons + torch.arange(v.electrons.shape[-1], dtype=v.electrons.dtype)
        views.append(dataclasses.replace(v, electrons=ramp))
    ramped = dataclasses.replace(data, views=tuple(views))
    flipped = tuple(dataclasses.replace(v, electrons=v.electrons.flip(-1)) for v in ramped.views)
    return ramped, dataclasses.replace(ramped, views=flipped)


def _moved_mirror_or_camera(data):
    system = data.system
    camera = system.cameras[0]
    lens = dataclasses.replace(camera.lens, focal_length_mm=camera.lens.focal_length_mm + 0.2)
    return dataclasses.replace(data, system=dataclasses.replace(system, cameras=(
        dataclasses.replace(camera, lens=lens), *system.cameras[1:])))


def test_the_fingerprint_covers_the_content_not_only_its_sums():
    ramped, flipped = _flipped(_data())
    assert data_fingerprint(ramped) != data_fingerprint(flipped)  # same pixels, shots and signal
    assert data_fingerprint(_moved_mirror_or_camera(_data())) != data_fingerprint(_data())
    assert data_fingerprint(dataclasses.replace(_data(), photons_per_atom=20.0)) != data_fingerprint(_data())
    assert data_fingerprint(dataclasses.replace(_data(), read_noise_e=3.0)) != data_fingerprint(_data())
    renamed = dataclasses.replace(_data(), views=(dataclasses.replace(_data().views[0], name="w"),))
    assert data_fingerprint(renamed) != data_fingerprint(_data())


@pytest.mark.parametrize("other", [
    {"signal": 50.0 * (1 + 1e-6)},  # one part in 10⁶ of the signal (float32 holds it)
    {"masked": 1},  # one pixel fewer
    {"shots": 2},
    {"views": 2},
])
def test_the_fingerprint_changes_with_the_data(other):
    assert data_fingerprint(_data(**other)) != data_fingerprint(_data())


def test_masked_pixels_do_not_count_in_the_signal():
    data = _data(masked=3)
    view = data.views[0]
    changed = dataclasses.replace(view, electrons=torch.where(view.mask, view.electrons, 1e6))
    assert data_fingerprint(dataclasses.replace(data, views=(changed,))) == data_fingerprint(data)


# ------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("change", [
    {"field": "hashgrid"},
    {"model": "emission-absorption"},
    {"seed": 5},
    {"field_options": {"voxel_resolution": [8, 4, 4]}},
])
def test_another_field_model_seed_or_field_options_is_refused(saved, change):
    key = next(iter(change))
    with pytest.raises(DataError) as info:
        check_resumable(saved["path"], dataclasses.replace(CFG, **change))
    message = str(info.value)
    assert f"written with {key}={getattr(CFG, key)!r}, not {change[key]!r}" in message
    assert str(saved["path"]) in message and "start a new --out" in message and "\n" not in message


def test_settings_that_do_not_change_the_parameters_may_differ(saved):
    other = dataclasses.replace(CFG, steps=99, lr=0.5, batch_pixels=7, checkpoint_every=3, device="cpu")
    assert check_resumable(saved["path"], other)["state"]["step"] == 12


def test_other_data_is_refused_and_no_data_or_no_key_is_not_checked(saved, tmp_path):
    with pytest.raises(DataError) as info:
        check_resumable(saved["path"], CFG, _data(signal=51.0))
    message = str(info.value)
    assert "written for other data" in message and "now 1 views" in message and "\n" not in message
    assert check_resumable(saved["path"], CFG, _data()) is not None
    assert check_resumable(saved["path"], CFG) is not None  # no data given: nothing to compare
    field, optim, gen = _trained()
    keyless = tmp_path / "old.pt"
    save_checkpoint(keyless, field, optim, gen, CFG, FitState(step=1))  # no data key recorded
    assert check_resumable(keyless, CFG, _data(signal=51.0))["data_key"] is None


def test_load_checks_before_it_restores_anything(saved):
    field, optim, gen = _trained(seed=9)
    before = {k: v.clone() for k, v in field.state_dict().items()}
    with pytest.raises(DataError, match="seed=4"):
        load_checkpoint(saved["path"], field, optim, gen, dataclasses.replace(CFG, seed=0))
    assert all(torch.equal(field.state_dict()[k], v) for k, v in before.items())


def _write(path, payload):
    torch.save(payload, path)
    return path


VALID = {"format": "recon.checkpoint/1", "field": {}, "optimizer": {}, "generator": torch.zeros(3),
         "config": {}, "state": {}}


@pytest.mark.parametrize("payload, needle", [
    ([1, 2, 3], "is not a recon checkpoint (recon.checkpoint/1)"),
    (torch.ones(2), "is not a recon checkpoint"),
    ({**VALID, "format": "recon.checkpoint/2"}, "is not a recon checkpoint"),
    ({k: v for k, v in VALID.items() if k != "format"}, "is not a recon checkpoint"),
    ({k: v for k, v in VALID.items() if k not in ("field", "state")}, "is incomplete (no field, state)"),
    ({**VALID, "config": [1]}, "is incomplete (no config/state)"),
    ({**VALID, "state": "step 3"}, "is incomplete (no config/state)"),
], ids=["list", "tensor", "format-2", "no-format", "missing-keys", "config-not-dict", "state-not-dict"])
def test_read_refuses_what_is_not_a_whole_recon_checkpoint(tmp_path, payload, needle):
    path = _write(tmp_path / "checkpoint.pt", payload)
    with pytest.raises(DataError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"checkpoint {path} ") and needle in message
    assert "without --resume" in message and "\n" not in message


def test_read_refuses_a_missing_file_and_says_what_stands_in_a_files_place(tmp_path):
    with pytest.raises(DataError, match="does not exist; run the fit without --resume first"):
        read_checkpoint(tmp_path / "none.pt")
    (tmp_path / "dir.pt").mkdir()
    os.mkfifo(tmp_path / "fifo.pt")  # opening it would block: it must not be opened
    (tmp_path / "link.pt").symlink_to(tmp_path / "gone.pt")
    for name, kind in (("dir.pt", "a directory"), ("fifo.pt", "a FIFO, socket or device"),
                       ("link.pt", "a broken symbolic link")):
        with pytest.raises(DataError) as info:
            read_checkpoint(tmp_path / name)
        assert str(info.value) == (f"checkpoint {tmp_path / name} is {kind}, not a checkpoint file; move it "
                                   "away and fit again without --resume")


@pytest.mark.parametrize("part, key, value", [
    ("state", "step", "ten"),
    ("state", "elapsed_s", [1.0]),
    ("state", "stopped", 3),
    ("state", "losses", ["x"]),
    ("state", "losses", 4.0),
    ("state", "heldout", [[4]]),
    ("state", "stop_rule", {"best": "low"}),
    ("state", "stop_rule", {"best": 1.0, "best_pixels": "many"}),
    ("state", "stop_rule", {"best": 1.0, "best_pixels": torch.tensor([1.0, float("nan")])}),
    ("config", "steps", "many"),
    ("config", "lr", "fast"),
    ("config", "field_options", [1, 2]),
])
def test_a_checkpoint_whose_fields_have_the_wrong_type_is_a_one_line_error(saved, tmp_path, part, key, value):
    payload = torch.load(saved["path"], weights_only=True)
    payload[part][key] = value
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(DataError) as info:
        read_checkpoint(bad)
    message = str(info.value)
    assert f"'{key}'" in message and str(bad) in message and "\n" not in message
    assert "delete it and fit again without --resume" in message


@pytest.mark.parametrize("key", ["field", "best_field"])
def test_a_field_holding_nan_or_inf_is_refused_before_it_loads(saved, key):
    payload = torch.load(saved["path"], weights_only=True)
    params = {k: v.clone() for k, v in payload["field"].items()}
    first = next(iter(params))
    params[first].view(-1)[0] = math.inf if key == "best_field" else math.nan
    payload[key] = params
    torch.save(payload, saved["path"])
    field, optim, gen = _trained(seed=5)
    before = [p.detach().clone() for p in field.parameters()]
    with pytest.raises(DataError) as info:
        load_checkpoint(saved["path"], field, optim, gen, CFG, best_field={})
    assert str(info.value) == (f"checkpoint {saved['path']} holds NaN or inf in its {key.replace('_', ' ')}; "
                               "delete it and fit again without --resume")
    assert all(torch.equal(a, b) for a, b in zip(before, field.parameters(), strict=True))  # untouched
