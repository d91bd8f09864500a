"""Mesh pictures: the off-screen preview and the comparison figure and JSON."""

import json

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
