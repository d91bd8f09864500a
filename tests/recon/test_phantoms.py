import math

import numpy as np
import pytest
import torch

from recon.errors import ConfigError
from recon.phantoms import load_phantom, truth_volume


@pytest.mark.parametrize("name", ["gaussian", "fringes", "donut", "spike", "clouds", "sphere"])
def test_phantoms_integrate_to_the_atom_number(name):
    ph = load_phantom(name, atoms=1e6)
    v = truth_volume(ph, (-3, -3, -3), (3, 3, 3.5), 0.05, supersample=1)
    total = v.data.sum() * 0.05**3
    assert abs(total / 1e6 - 1) < 0.01
    assert v.unit == "atoms/mm^3"


def test_fringe_period_from_fft():
    ph = load_phantom("fringes", atoms=1.0)
    y = torch.linspace(-1.5, 1.5, 3001, dtype=torch.float64)
    line = ph.density(torch.stack([torch.zeros_like(y), y, torch.zeros_like(y)], -1)).numpy()
    spec = np.abs(np.fft.rfft(line - line.mean()))
    freq = np.fft.rfftfreq(len(y), d=3.0 / 3000)
    band = freq > 2.0  # above the envelope's own spectrum (σ = 0.5 mm)
    peak = freq[band][np.argmax(spec[band])]
    assert abs(1 / peak - 0.2) < 0.01  # 200 µm between maxima


def test_toml_phantom_and_errors(tmp_path):
    good = tmp_path / "two.toml"
    good.write_text('[[gaussian]]\ncenter_mm = [0.3, 0, 0]\nsigma_mm = 0.2\n'
                    '[[gaussian]]\ncenter_mm = [-0.3, 0, 0]\nsigma_mm = [0.1, 0.2, 0.3]\nweight = 2.0\n')
    ph = load_phantom(good, atoms=1000.0)
    v = truth_volume(ph, (-1.5, -1.5, -1.5), (1.5, 1.5, 1.5), 0.03, supersample=1)
    assert abs(v.data.sum() * 0.03**3 - 1000.0) < 5
    bad = tmp_path / "bad.toml"
    bad.write_text('[[gaussian]]\ncentre_mm = [0, 0, 0]\n')
    with pytest.raises(ConfigError, match=r"gaussian\[0\].centre_mm' is not known"):
        load_phantom(bad, atoms=1.0)
    with pytest.raises(ConfigError, match="unknown phantom"):
        load_phantom("banana", atoms=1.0)
    with pytest.raises(ConfigError, match="atoms"):
        load_phantom("gaussian", atoms=-1.0)


def test_truth_is_voxel_average_and_centred():
    ph = load_phantom("gaussian", atoms=1.0)
    v = truth_volume(ph, (-1.2, -1.2, -1.2), (1.2, 1.2, 1.2), 0.1)
    assert v.shape == (24, 24, 24)
    assert np.allclose(v.origin_mm, (-1.15, -1.15, -1.15))
    assert math.isclose(float(v.data.max()), float(v.data[11:13, 11:13, 11:13].max()))
