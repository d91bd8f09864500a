"""The encoding registry: torch and auto on CPU, an explicit tcnn that cannot be met."""

import pytest
import torch

from recon.errors import BackendUnavailableError, ConfigError
from recon.model.encoding import make_encoding
from recon.model.hashgrid_tcnn import TCNN_INSTALL_HINT, tcnn_status
from recon.model.hashgrid_torch import TorchHashGrid
from tests.recon.model.hashgrid_reference import TINY


def test_registry_torch_and_auto_on_cpu():
    enc = make_encoding(TINY, backend="torch", seed=2)
    assert isinstance(enc, TorchHashGrid) and enc.backend == "torch"
    assert make_encoding(TINY, backend="auto", device="cpu").backend == "torch"
    assert torch.equal(enc.params, make_encoding(TINY, seed=2).params)
    assert list(enc.state_dict()) == ["params"]
    with pytest.raises(ConfigError, match="backend must be one of"):
        make_encoding(TINY, backend="cuda")


@pytest.mark.skipif(tcnn_status()[0], reason="tinycudann is usable here")
def test_explicit_tcnn_raises_with_reason_and_remedy():
    _, reason = tcnn_status()
    for device in ("cpu", "cuda"):
        with pytest.raises(BackendUnavailableError) as info:
            make_encoding(TINY, backend="tcnn", device=device)
        message = str(info.value)
        assert "--backend torch" in message
    assert reason in message and TCNN_INSTALL_HINT in message
    if not torch.cuda.is_available():
        assert "no CUDA device" in reason
