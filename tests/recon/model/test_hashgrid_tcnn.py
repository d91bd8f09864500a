"""tiny-cuda-nn: status reports, the twin test against torch (CUDA only), lazy import."""

import subprocess
import sys

import pytest
import torch

from recon.errors import BackendUnavailableError
from recon.model.encoding import make_encoding
from recon.model.hashgrid import HashGridConfig
from recon.model.hashgrid_tcnn import available_backends, tcnn_status
from recon.model.hashgrid_torch import TorchHashGrid
from tests.conftest import requires_tcnn
from tests.recon.model.hashgrid_reference import TINY


def test_available_backends_report():
    report = available_backends()
    assert set(report) == {"torch", "tcnn"}
    assert report["torch"][0] is True
    ok, reason = tcnn_status()
    assert report["tcnn"] == (ok, reason) and reason


@pytest.mark.parametrize("error", [
    "raise EnvironmentError('Unknown compute capability. Ensure PyTorch with CUDA support "
    "is installed.')",
    "raise ImportError('libcuda.so.1: cannot open shared object file')",
])
def test_tcnn_status_reports_import_failures(error, tmp_path, monkeypatch):
    package = tmp_path / "tinycudann"
    package.mkdir()
    (package / "__init__.py").write_text(error + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tinycudann", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ok, reason = tcnn_status()
    assert not ok
    assert ("Unknown compute capability" in reason) or ("libcuda.so.1" in reason)
    with pytest.raises(BackendUnavailableError, match="tcnn' is unavailable"):
        make_encoding(TINY, backend="tcnn", device="cuda")


@requires_tcnn
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_tcnn_matches_torch_forward_and_gradients(dtype):
    from recon.model.hashgrid_tcnn import TcnnHashGrid

    cfg = HashGridConfig()
    twin = TcnnHashGrid(cfg, seed=0, dtype=dtype, device="cuda")
    ref = TorchHashGrid(cfg, seed=0, device="cuda")
    assert torch.equal(twin.params, ref.params)  # same seeded initialisation
    with torch.no_grad():
        ref.params.uniform_(-1, 1)
    twin.load_state_dict(ref.state_dict())  # the same flat layout under the same name
    x = torch.rand(1 << 14, 3, device="cuda")
    upstream = torch.randn(1 << 14, cfg.n_output_dims, device="cuda")
    out_twin, out_ref = twin(x), ref(x)
    (out_twin * upstream).sum().backward()
    (out_ref * upstream).sum().backward()
    if dtype == torch.float32:
        rtol, atol = 1e-4, 1e-5
    else:  # fp16 parameters and products in tcnn
        rtol, atol = 1e-2, 2e-3
    torch.testing.assert_close(out_twin, out_ref, rtol=rtol, atol=atol)
    scale = ref.params.grad.abs().max()
    torch.testing.assert_close(twin.params.grad / scale, ref.params.grad / scale,
                               rtol=rtol, atol=atol * 10)


def test_importing_fields_does_not_load_tinycudann():
    code = ("import sys, recon.model.fields, recon.model.encoding; "
            "assert 'tinycudann' not in sys.modules, 'tinycudann imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True)
