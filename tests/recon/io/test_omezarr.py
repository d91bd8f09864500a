"""OME-Zarr: read back by the zarr package (independent of recon), every level placed in mm."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from recon.cli import app
from recon.errors import ConfigError
from recon.io.omezarr import pyramid, write_ome_zarr
from recon.io.volume import Volume, write_volume

zarr = pytest.importorskip("zarr", reason="zarr (a test extra: pip install '.[test]') reads the export")

ORIGIN, VOXEL = (1.0, -2.0, 0.5), (0.1, 0.2, 0.05)  # (x, y, z) mm, anisotropic


def _volume(shape=(40, 35, 70)):
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    return Volume(data, ORIGIN, VOXEL, unit="atoms/mm^3", meta={"run": "t"})


def test_the_zarr_package_reads_the_volume_and_its_placement(tmp_path):
    volume = _volume()
    path = write_ome_zarr(tmp_path / "d.ome.zarr", volume)
    group = zarr.open_group(str(path), mode="r")
    assert np.array_equal(group["0"][:], volume.data)  # chunks of 64 voxels, padded at the edges
    (ms,) = group.attrs["multiscales"]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in ms["axes"]} == {"millimeter"}
    scale, translation = ms["datasets"][0]["coordinateTransformations"]
    assert scale == {"type": "scale", "scale": [0.05, 0.2, 0.1]}  # z, y, x
    assert translation == {"type": "translation", "translation": [0.5, -2.0, 1.0]}  # voxel 0's centre
    assert group.attrs["recon"]["unit"] == "atoms/mm^3"


def test_each_level_halves_the_last_and_keeps_its_centres_where_they_are(tmp_path):
    volume = _volume()
    path = write_ome_zarr(tmp_path / "d.ome.zarr", volume, levels=4)
    group = zarr.open_group(str(path), mode="r")
    datasets = group.attrs["multiscales"][0]["datasets"]
    assert [group[d["path"]].shape for d in datasets] == [(40, 35, 70), (20, 17, 35)]  # 17 // 2 < 16: stop
    one = group["1"][:]
    assert one[3, 4, 5] == pytest.approx(volume.data[6:8, 8:10, 10:12].mean(), rel=1e-6)
    scale, translation = datasets[1]["coordinateTransformations"]
    assert scale["scale"] == pytest.approx([0.1, 0.4, 0.2])
    # level 1's voxel 0 is the mean of level 0's voxels 0 and 1: its centre half a voxel further in
    assert translation["translation"] == pytest.approx([0.5 + 0.025, -2.0 + 0.1, 1.0 + 0.05])
    assert len(pyramid(_volume((64, 64, 64)), levels=10)) == 3  # 64, 32, 16


def test_an_export_is_written_whole_or_not_at_all(tmp_path):
    path = write_ome_zarr(tmp_path / "d.ome.zarr", _volume())
    before = json.loads((path / ".zattrs").read_text())
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        write_ome_zarr(path, _volume((20, 20, 20)))
    assert json.loads((path / ".zattrs").read_text()) == before
    write_ome_zarr(path, _volume((20, 20, 20)), overwrite=True)
    assert zarr.open_group(str(path), mode="r")["0"].shape == (20, 20, 20)
    with pytest.raises(ConfigError, match="ends in .zarr"):
        write_ome_zarr(tmp_path / "d.tif", _volume())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.ome.zarr"]  # no temporary left


def test_recon_export_writes_a_fits_density_beside_it(tmp_path):
    fit = tmp_path / "fit"
    fit.mkdir()
    write_volume(fit / "density.tif", _volume((16, 16, 16)))
    runner = CliRunner()
    res = runner.invoke(app, ["export", str(fit)])
    assert res.exit_code == 0, res.output
    assert zarr.open_group(str(fit / "density.ome.zarr"), mode="r")["0"].shape == (16, 16, 16)
    res = runner.invoke(app, ["export", str(fit)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = runner.invoke(app, ["export", str(fit), "--levels", "0"])
    assert res.exit_code == 2 and "--levels must be in 1 … 10" in res.output
