"""`recon system show`: the per-view table of the default dome, overlapping regions, the layout PNG."""

import dataclasses
import math
import struct
from pathlib import Path

import pytest
import torch

from optics.design import ViewRegion
from optics.system import load_system
from recon.errors import ConfigError
from recon.reporting.system_report import draw_layout, overlapping_regions, summarize_views
from tests.optics.helpers import make_system

MIRROR = {"name": "m1", "center_mm": [0.0, 12.0, 12.0], "normal": [0.0, -0.3, -0.95], "shape": "circle",
          "radius_mm": 4.0, "reflectivity": 0.95}


@pytest.fixture(scope="module")
def dome():
    return load_system(Path(__file__).parents[3] / "data" / "systems" / "magis_dome.toml")


@pytest.fixture(scope="module")
def dome_rows(dome):
    return summarize_views(dome)


def _region(name, roi, path=0):
    return ViewRegion(path, name, roi, 0.0, 0.0, 0.2, 0.0, 0.0)


def test_dome_has_one_row_per_light_path(dome, dome_rows):
    assert [r.region.path for r in dome_rows] == list(range(dome.n_paths)) == list(range(15))
    assert [r.region.name for r in dome_rows] == ["direct", *(f"r1m0{k}" for k in range(1, 7)),
                                                  *(f"r2m0{k}" for k in range(1, 9))]


def test_dome_collected_fractions_match_the_readme(dome_rows):
    fractions = [r.collected_fraction for r in dome_rows]
    assert all(f > 0 for f in fractions)
    # README: "Total collected: 1.74 % of 4π"; direct 0.1524 %, ring 1 0.1138 %, ring 2 0.1136–0.1137 %.
    assert sum(fractions) == pytest.approx(0.017446, abs=5e-6)
    assert fractions[0] == pytest.approx(0.001524, abs=5e-7)
    assert fractions[1:7] == pytest.approx([0.001138] * 6, abs=5e-7)
    assert fractions[7:] == pytest.approx([0.0011365] * 8, abs=1e-6)


def test_dome_chief_rays_hit_the_box_and_regions_do_not_overlap(dome_rows):
    assert all(r.chief_ray_hits_box for r in dome_rows)
    assert overlapping_regions([r.region for r in dome_rows]) == []
    assert {r.depth_of_field_mm for r in dome_rows} == {dome_rows[0].depth_of_field_mm}
    assert dome_rows[0].depth_of_field_mm == pytest.approx(0.243, abs=5e-4)  # README: DoF 0.243 mm


def test_direct_view_collects_the_solid_angle_of_the_aperture():
    system = make_system(mirrors=[MIRROR])
    direct, mirror = summarize_views(system)
    cam = system.cameras[0]
    radius, distance = float(cam.lens.aperture_radius_mm), float(cam.pose.position_mm.norm())
    cone = (1 - math.cos(math.atan(radius / distance))) / 2  # no window, lens facing the box centre
    assert direct.collected_fraction == pytest.approx(cone, rel=1e-3)
    assert 0 < mirror.collected_fraction < direct.collected_fraction
    assert direct.chief_ray_hits_box and mirror.chief_ray_hits_box


def test_depth_of_field_uses_the_pixel_pitch_as_the_blur():
    system = make_system()
    (row,) = summarize_views(system)
    lens, pitch = system.cameras[0].lens, system.cameras[0].sensor.pixel_pitch_mm
    so, m = float(lens.focus_distance_mm), float(lens.magnification)
    k = float(pitch) / (2 * float(lens.aperture_radius_mm) * m)
    assert row.depth_of_field_mm == pytest.approx(so / (1 - k) - so / (1 + k), rel=1e-9)
    assert row.depth_of_field_mm == pytest.approx(0.2431, abs=1e-4)


def test_mirror_collection_scales_with_reflectivity():
    full = summarize_views(make_system(mirrors=[dict(MIRROR, reflectivity=0.9)]))[1].collected_fraction
    half = summarize_views(make_system(mirrors=[dict(MIRROR, reflectivity=0.45)]))[1].collected_fraction
    assert half == pytest.approx(full / 2, rel=1e-9)


@pytest.mark.parametrize("camera", [1, -1])
def test_bad_camera_index_raises(dome, camera):
    with pytest.raises(ConfigError, match=rf"camera {camera} does not exist in dome.toml \(it has 1\); "
                                          r"pass --camera 0\.\.0"):
        summarize_views(dome, camera, source="dome.toml")


def test_overlapping_regions_of_hand_made_rectangles():
    a = _region("a", (0, 0, 10, 10))
    right = _region("right", (10, 0, 5, 10))  # shares a's right edge
    below = _region("below", (0, 10, 10, 3))  # shares a's bottom edge
    corner = _region("corner", (9, 9, 4, 4))  # one pixel in common with a
    inside = _region("inside", (2, 3, 2, 2))
    far = _region("far", (100, 100, 1, 1))
    assert overlapping_regions([a, right, below, far]) == []
    assert overlapping_regions([a, corner]) == ["a/corner"]
    assert overlapping_regions([inside, a, far]) == ["inside/a"]
    assert overlapping_regions([a, right, corner, below]) == ["a/corner", "right/corner", "corner/below"]
    assert overlapping_regions([]) == [] and overlapping_regions([a]) == []


def test_overlapping_regions_is_symmetric_in_its_rule():
    a, b = _region("a", (5, 5, 10, 10)), _region("b", (0, 0, 6, 6))
    assert overlapping_regions([a, b]) == ["a/b"] and overlapping_regions([b, a]) == ["b/a"]
    shifted = dataclasses.replace(b, roi=(0, 0, 5, 6))  # now touches a's left edge only
    assert overlapping_regions([a, shifted]) == []


def test_draw_layout_writes_a_png(tmp_path):
    system = make_system(mirrors=[MIRROR], dtype=torch.float32)
    rows = summarize_views(system)
    path = tmp_path / "layout.png"
    draw_layout(system, {0: rows}, path)
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (18 * 110, 11 * 110)  # figsize (18, 6 + 5) at 110 dpi
    assert list(tmp_path.iterdir()) == [path]  # written atomically, no temporary left


def test_the_layout_traces_every_camera_and_gives_each_its_sensor_panel(tmp_path, monkeypatch,
                                                                        three_camera_system_file):
    import recon.reporting.system_report as report

    system = load_system(three_camera_system_file)
    shown = {i: summarize_views(system, i) for i in range(3)}
    traced = []
    original = report.trace_pixels
    monkeypatch.setattr(report, "trace_pixels", lambda *a, camera, **k: traced.append(camera) or original(
        *a, camera=camera, **k))
    path = tmp_path / "layout.png"
    draw_layout(system, shown, path)
    assert sorted(set(traced)) == [0, 1, 2]  # every camera's rays
    assert struct.unpack(">II", path.read_bytes()[16:24]) == (18 * 110, 11 * 110)  # three panels: one row
    four = load_system(Path(__file__).parents[3] / "data" / "systems" / "mot_4cam.toml")
    draw_layout(four, {i: summarize_views(four, i) for i in range(4)}, path)  # a fourth panel: a second row
    assert struct.unpack(">II", path.read_bytes()[16:24]) == (18 * 110, 16 * 110)


def test_the_camera_table_has_every_camera_where_it_is_and_looks(three_camera_system_file):
    from recon.reporting.system_report import summarize_cameras

    system = load_system(three_camera_system_file)
    rows = summarize_cameras(system)
    assert [r.name for r in rows] == ["south", "east", "north"] and [r.views for r in rows] == [1, 1, 1]
    directions = [r.direction for r in rows]
    for got, want in zip(directions, [(0, 0, 1), (-1, 0, 0), (0, 1, 0)], strict=True):
        assert got == pytest.approx(want, abs=1e-9)
    for r in rows:  # the helper's thin lens: m = 0.215 at its focus, where the box centre is
        assert r.distance_mm == pytest.approx(351.926, rel=1e-6)
        assert r.magnification == pytest.approx(0.215, rel=1e-4)
        assert r.object_pixel_um == pytest.approx(3.76 / 0.215, rel=1e-4)
        assert r.principal_point_px == (1000.0, 750.0)


def test_a_region_beyond_the_sensor_is_named_with_how_far_it_runs_off(dome):
    from recon.reporting.system_report import off_sensor

    sensor = dome.cameras[0].sensor
    assert off_sensor(dome, 0, _region("direct", (10, 10, 100, 100))) is None
    text = off_sensor(dome, 0, _region("direct", (-12, 5, 100, sensor.height_px)))
    assert "12 px left" in text and "5 px bottom" in text and "top" not in text and "shrink the box" in text


def test_system_show_prints_every_camera_then_each_ones_views(three_camera_system_file, tmp_path):
    from typer.testing import CliRunner

    from recon.cli import app

    res = CliRunner().invoke(app, ["system", "show", str(three_camera_system_file), "--out",
                                   str(tmp_path / "layout.png")], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "3 camera(s)" in res.output
    for index, name in enumerate(("south", "east", "north")):
        assert f"views of camera {index} ({name})" in res.output
    assert (tmp_path / "layout.png").stat().st_size > 1000
    one = CliRunner().invoke(app, ["system", "show", str(three_camera_system_file), "--camera", "1"],
                             env={"COLUMNS": "250"})
    assert one.exit_code == 0 and "camera(s)" not in one.output and "camera 1 (east)" in one.output
