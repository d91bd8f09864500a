"""Building fields: seeded and checkpointable, backend requests, no silent downgrade."""

import pytest
import torch

from recon.errors import BackendUnavailableError, ConfigError
from recon.model.fields.registry import make_field
from recon.model.hashgrid_tcnn import tcnn_status
from tests.recon.model.fields.small import BOX, points_in_box, small_config


def test_deterministic_given_seed_and_checkpointable(kind):
    cfg = small_config(kind)
    a = make_field(cfg, *BOX, seed=11)
    b = make_field(cfg, *BOX, seed=11)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    points = points_in_box(100, seed=4)
    with torch.no_grad():  # a "trained" state: perturb, save, load into a fresh field
        for p in a.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(9)))
    c = make_field(cfg, *BOX, seed=12)
    c.load_state_dict(a.state_dict())
    assert torch.equal(a(points), c(points))
    assert {"box_min_mm", "box_max_mm", "density_scale"} <= set(a.state_dict())


def test_different_seeds_differ():
    for kind in ("hashgrid", "siren"):
        a = make_field(small_config(kind), *BOX, seed=0).state_dict()
        b = make_field(small_config(kind), *BOX, seed=1).state_dict()
        assert any(not torch.equal(a[k], b[k]) for k in a)


def test_backend_requests():
    with pytest.raises(ConfigError, match="hashgrid fields only"):
        make_field(small_config("voxel"), *BOX, backend="tcnn")
    with pytest.raises(ConfigError, match="backend must be one of"):
        make_field(small_config("siren"), *BOX, backend="gpu")
    assert make_field(small_config("siren"), *BOX, backend="auto").backend == "torch"


@pytest.mark.skipif(tcnn_status()[0], reason="tinycudann is usable here")
def test_hashgrid_tcnn_unavailable_is_an_error_not_a_downgrade():
    with pytest.raises(BackendUnavailableError, match="--backend torch"):
        make_field(small_config("hashgrid"), *BOX, backend="tcnn")
