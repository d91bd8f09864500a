"""`recon render`: projections and a turntable of a volume, and its refusals."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from recon.cli import app
from recon.errors import ConfigError, DataError
from recon.io.volume import Volume, write_volume
from recon.jobs.render import render
from tests.recon.analysis.test_turntable import _blob


@pytest.fixture
def density(tmp_path):
    fit = tmp_path / "fit"
    fit.mkdir()
    write_volume(fit / "density.tif", _blob())
    return fit


def test_a_fit_directory_gets_projections_and_a_looping_turntable(density):
    (density / "renders").mkdir()
    (density / "renders" / "mip.png").write_bytes(b"the fit's")  # a fit writes its projections
    outcome = render(density, frames=6)
    assert outcome.mip == density / "renders" / "mip.png" and outcome.mip.stat().st_size > 1000
    assert [p.name for p in outcome.frames] == [f"frame_{k:03d}.png" for k in range(6)]
    with Image.open(outcome.animation) as gif:
        assert gif.format == "GIF" and gif.n_frames == 6 and gif.info.get("loop") == 0
    with pytest.raises(ConfigError, match="already holds renders; pass --overwrite"):
        render(density, frames=6)
    again = render(density, frames=0, overwrite=True)
    assert again.animation is None and again.frames == ()


def test_a_volume_file_renders_beside_itself_and_bad_requests_are_one_line(density, tmp_path):
    outcome = render(density / "density.tif", frames=2, axis="x")
    assert outcome.mip.parent == density / "density-renders"
    runner = CliRunner()
    for args, needle in ((["--frames", "-1"], "--frames must be in 0 … 720"), (["--axis", "q"], "--axis"),
                         ([], None)):
        res = runner.invoke(app, ["render", str(tmp_path / "nothing"), *args])
        assert res.exit_code == 2 and "\n" not in res.output.strip()
        assert needle is None or needle in res.output or "does not exist" in res.output
    res = runner.invoke(app, ["render", str(density), "--frames", "3", "--out", str(tmp_path / "pics")])
    assert res.exit_code == 0, res.output
    assert "3 turntable frames" in res.output and (tmp_path / "pics" / "turntable.gif").is_file()
    flat = Volume(np.zeros((4, 4, 4), np.float32), (0.0,) * 3, (0.1,) * 3)
    write_volume(tmp_path / "flat.tif", flat)
    assert render(tmp_path / "flat.tif", frames=2).animation.is_file()  # an empty volume still draws


def test_a_fits_views_are_drawn_full_size_from_its_views_npz(density, tmp_path):
    from recon.io.viewimages import ViewImage, save_view_images

    with pytest.raises(DataError, match="views.npz does not exist"):
        render(density, frames=0, views=True, out=tmp_path / "none")
    ones = np.ones((5, 7), np.float32)
    save_view_images(density / "views.npz", [ViewImage("direct", (0, 0, 7, 5), 0.02, ones, ones,
                                                       ones.astype(np.int32))], 2.0)
    outcome = render(density, frames=0, views=True, out=tmp_path / "pics")
    assert [p.name for p in outcome.views] == ["view_direct.png"] and outcome.views[0].stat().st_size > 1000
    with pytest.raises(ConfigError, match="already holds renders"):  # the view's picture is guarded
        render(density, frames=0, views=True, out=tmp_path / "pics")
    assert render(density, frames=0, views=True, out=tmp_path / "pics", overwrite=True).views == outcome.views
    res = CliRunner().invoke(app, ["render", str(density / "density.tif"), "--views"])
    assert res.exit_code == 2 and "is a volume TIFF, not a fit" in res.output
    res = CliRunner().invoke(app, ["render", str(density), "--views", "--frames", "0", "--out",
                                   str(tmp_path / "cli")])
    assert res.exit_code == 0 and "1 view pictures" in res.output


def test_named_views_and_an_emission_turntable(density, tmp_path):
    from recon.io.viewimages import ViewImage, save_view_images

    ones = np.ones((5, 7), np.float32)
    frames = ones.astype(np.int32)
    save_view_images(density / "views.npz", [ViewImage(name, (0, 0, 7, 5), 0.02, ones, ones, frames)
                                             for name in ("direct", "m1", "m2")], 2.0)
    outcome = render(density, frames=2, mode="emission", views=["m2", "m1"], out=tmp_path / "pics")
    assert sorted(p.name for p in outcome.views) == ["view_m1.png", "view_m2.png"]
    assert outcome.animation.is_file()
    with pytest.raises(ConfigError, match="no view 'm3'; its views are direct, m1, m2"):
        render(density, frames=0, views=["m3"], out=tmp_path / "other")
    with pytest.raises(ConfigError, match="--mode must be one of mip, emission"):
        render(density, frames=2, mode="sum", out=tmp_path / "other")
    res = CliRunner().invoke(app, ["render", str(density), "--frames", "0", "--view", "direct", "--out",
                                   str(tmp_path / "cli")])
    assert res.exit_code == 0 and "1 view pictures" in res.output
