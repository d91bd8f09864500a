"""Fuzzed checkpoints: random bytes, truncations and mutated contents only raise the one-line DataError."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from recon.errors import DataError
from recon.fitting.checkpoint import FitState, check_resumable, load_checkpoint, save_checkpoint
from recon.fitting.config import FitConfig
from tests.fuzzing import FUZZ, assert_one_line, mutated


def _field():
    return torch.nn.Linear(3, 2)


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    field = _field()
    optim = torch.optim.Adam(field.parameters())
    field(torch.ones(1, 3)).sum().backward()
    optim.step()
    state = FitState(step=7, losses=[1.0])
    save_checkpoint(path, field, optim, torch.Generator().manual_seed(1), FitConfig(), state)
    return path.read_bytes()


def _load(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        path.write_bytes(raw)
        field = _field()
        try:
            load_checkpoint(path, field, torch.optim.Adam(field.parameters()), torch.Generator(), FitConfig())
        except DataError as err:
            assert_one_line(err)


def _load_payload(payload: dict, *, check: bool = False):
    """Save ``payload`` as a checkpoint and load it into a fresh field: the field, or None after the
    one-line DataError. ``check``: run ``check_resumable`` first."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        path.write_bytes(buffer.getvalue())
        field = _field()
        try:
            if check:
                check_resumable(path, FitConfig())
            load_checkpoint(path, field, torch.optim.Adam(field.parameters()), torch.Generator(), FitConfig())
        except DataError as err:
            assert_one_line(err)
            return None
    return field


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_data_error(raw):
    _load(raw)


@FUZZ
@given(st.data())
def test_truncated_and_flipped_checkpoints_only_raise_data_error(valid, data):
    raw = bytearray(valid[: data.draw(st.integers(0, len(valid)))])
    for _ in range(data.draw(st.integers(0, 3))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    _load(bytes(raw))


@FUZZ
@given(mutated({"config": {"field": "hashgrid", "seed": 0, "model": "emission", "field_options": {}},
                "state": {"step": 7, "losses": [1.0], "elapsed_s": 0.5}}))
def test_mutated_settings_and_state_only_raise_data_error(valid, edit):
    payload = torch.load(io.BytesIO(valid), weights_only=True)
    edited = edit.get("config")
    payload["config"] = {**payload["config"], **edited} if isinstance(edited, dict) else edited
    payload["state"] = edit.get("state")
    _load_payload(payload, check=True)


FIELD_VALUES = st.one_of(
    st.builds(torch.zeros, st.lists(st.integers(0, 3), max_size=3).map(tuple)),
    st.builds(lambda n: torch.ones(2, 3, dtype=torch.int64) * n, st.integers(-3, 3)),
    st.just(torch.full((2, 3), float("nan"))),
    st.just(torch.ones(2, 3, dtype=torch.float64)),
    st.integers(), st.floats(), st.text(max_size=4), st.lists(st.floats(), max_size=3), st.none(),
)


@FUZZ
@given(st.data())
def test_mutated_field_parameters_only_raise_data_error(valid, data):
    """The field's tensors replaced by others of any shape, type or value, deleted, or added to."""
    payload = torch.load(io.BytesIO(valid), weights_only=True)
    field = payload["field"]
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(field) + ["extra"]))
        action = data.draw(st.sampled_from(["replace", "delete"]))
        if action == "delete" and key in field:
            del field[key]
        else:
            field[key] = data.draw(FIELD_VALUES)
    if data.draw(st.booleans()):
        payload["field"] = data.draw(st.one_of(FIELD_VALUES, st.just(field)))
    module = _load_payload(payload)
    if module is not None:  # what loads is a sound field
        assert all(torch.isfinite(p).all() for p in module.parameters())
