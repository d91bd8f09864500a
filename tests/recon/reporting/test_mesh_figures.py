"""Mesh pictures: the off-screen preview and the comparison figure and JSON."""

import json

import matplotlib.image
import numpy as np
import pytest

from recon.analysis.mesh_compare import compare_meshes  # noqa: E402
from recon.errors import BackendUnavailableError  # noqa: E402
from recon.reporting.mesh_figures import render_preview, write_comparison  # noqa: E402

pv = pytest.importorskip("pyvista")


def render_or_skip(*args, **kwargs):
    try:
        return render_preview(*args, **kwargs)
    except BackendUnavailableError as err:  # a machine without any OpenGL (EGL/OSMesa/X)
        pytest.skip(str(err))


def test_render_preview_writes_png(doe, tmp_path):
    plain = render_or_skip(doe, tmp_path / "doe.png", window_size=(320, 240))
    x = np.asarray(doe.points)[:, 0]
    coloured = render_or_skip(doe, tmp_path / "x.png", scalars=x, title="x (mm)",
                              window_size=(320, 240))
    for path in (plain, coloured):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doe.png", "x.png"]
    grey = matplotlib.image.imread(plain)[..., :3]
    assert grey.shape == (240, 320, 3)
    shaded = (np.abs(grey - grey.mean(axis=2, keepdims=True)).max(axis=2) > 0.02) & (grey.min(axis=2) > 0.2)
    assert shaded.mean() > 0.05  # the bluish-grey surface fills part of the picture, not a blank
    rgb = matplotlib.image.imread(coloured)[..., :3]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    yellow = (r > 0.7) & (g > 0.7) & (b < 0.35)  # viridis' high end: large x
    purple = (r > 0.2) & (r < 0.4) & (g < 0.15) & (b > 0.3)  # its low end: small x
    assert yellow.sum() > 50 and purple.sum() > 50
    assert np.nonzero(yellow)[1].mean() > np.nonzero(purple)[1].mean() + 20  # x runs to the right


def test_write_comparison(sphere_mesh, tmp_path):
    mesh, _ = sphere_mesh
    c = compare_meshes(mesh.translate((0.01, 0, 0), inplace=False), mesh, n_samples=1000)
    try:
        write_comparison(c, tmp_path / "cmp.json", tmp_path / "cmp.png", extra={"cad": "x.stl"})
    except BackendUnavailableError as err:
        pytest.skip(str(err))
    d = json.loads((tmp_path / "cmp.json").read_text())
    assert d["format"] == "recon.mesh_comparison/1" and d["cad"] == "x.stl"
    assert d["symmetric"]["hausdorff_um"] == pytest.approx(10.0, abs=0.5)
    assert set(d["recon_to_cad"]) == {"mean_um", "rms_um", "p95_um", "hausdorff_um", "n_samples"}
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    rgb = matplotlib.image.imread(tmp_path / "cmp.png")[..., :3]
    coloured = np.ptp(rgb, axis=2) > 0.2  # viridis: far from grey, unlike the white ground and black text
    assert coloured.mean() > 0.05  # the distance-coloured surface is drawn
