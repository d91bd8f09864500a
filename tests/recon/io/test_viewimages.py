"""views.npz: a fit's view images round-trip exactly, and a damaged or hostile archive is one clear error."""

import zipfile

import numpy as np
import pytest

from recon.errors import DataError
from recon.io.viewimages import FORMAT, ViewImage, load_view_images, save_view_images


def _images():
    rng = np.random.default_rng(3)
    return [ViewImage(name, roi, scale, rng.random(roi[:1:-1]).astype(np.float32),
                      rng.random(roi[:1:-1]).astype(np.float32),
                      rng.integers(0, 3, roi[:1:-1]).astype(np.int32))
            for name, roi, scale in (("direct", (10, 20, 7, 5), 0.0175), ("r1m01", (300, 4, 3, 9), 0.02))]


def test_round_trip_is_exact(tmp_path):
    images = _images()
    path = save_view_images(tmp_path / "views.npz", images, 2.5)
    loaded, read_noise = load_view_images(path)
    assert read_noise == 2.5 and len(loaded) == 2
    for a, b in zip(images, loaded, strict=True):
        assert (a.name, a.roi, a.object_pixel_mm) == (b.name, b.roi, b.object_pixel_mm)
        for x, y in ((a.measured, b.measured), (a.predicted, b.predicted), (a.frames, b.frames)):
            assert x.dtype == y.dtype and np.array_equal(x, y)
    assert [p.name for p in tmp_path.iterdir()] == ["views.npz"]  # no temporary left


def _archive(path, **changes):
    images = _images()[:1]
    arrays = {"format": np.array(FORMAT), "names": np.array(["direct"]), "rois": np.array([images[0].roi]),
              "object_pixel_mm": np.array([0.0175]), "read_noise_e": np.array(2.0),
              "measured_0": images[0].measured, "predicted_0": images[0].predicted,
              "frames_0": images[0].frames}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"format": np.array("something/9")}, "is not in the format"),
    ({"predicted_0": None}, "has no 'predicted_0'"),
    ({"measured_0": np.zeros((50, 70), np.float32)}, "declares"),  # larger than its ROI allows
    ({"measured_0": np.zeros((7, 5), np.float32)}, "that are not 5 × 7"),  # transposed
    ({"frames_0": np.zeros((5, 7), np.float32)}, "that are not 5 × 7"),  # frames must be integers
    ({"measured_0": np.full((5, 7), np.nan, np.float32)}, "NaN or inf"),
    ({"names": np.array(["direct"], dtype=object)}, "unreadable 'names'"),  # would need pickle
    ({"rois": np.array([[10, 20, 0, 5]])}, "positive sizes"),
    ({"object_pixel_mm": np.array([0.1, 0.2])}, "do not match"),
    ({"names": np.array(["../../escape"])}, "cannot name a file"),  # it would be written outside renders/
])
def test_a_damaged_archive_is_refused_with_its_problem(tmp_path, changes, message):
    path = _archive(tmp_path / "views.npz", **changes)
    with pytest.raises(DataError, match=message) as err:
        load_view_images(path)
    assert "\n" not in str(err.value) and "rerun recon fit" in str(err.value)


def test_a_missing_or_foreign_file_says_so(tmp_path):
    with pytest.raises(DataError, match="does not exist .*refit"):
        load_view_images(tmp_path / "views.npz")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(DataError, match="is not a views archive"):
        load_view_images(tmp_path / "text.npz")
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    with pytest.raises(DataError, match="has no 'format'"):
        load_view_images(tmp_path / "empty.npz")


def test_two_views_of_one_name_are_refused(tmp_path):
    images = _images()
    twins = [images[0], ViewImage(images[0].name, *[getattr(images[1], f) for f in ("roi", "object_pixel_mm",
                                                                                    "measured", "predicted",
                                                                                    "frames")])]
    path = save_view_images(tmp_path / "views.npz", twins, 2.0)
    with pytest.raises(DataError, match="names a view twice"):
        load_view_images(path)
