"""``views.npz``: a fit's measured and predicted image of every view, for pictures drawn later.

``recon fit`` writes it beside density.tif so that ``recon render OUT/ --views`` can draw each
view at full size without the run's frames or a new prediction. A plain NumPy archive read with
``allow_pickle=False`` (a file someone sent holds only numbers and strings, nothing that runs),
every member's declared size checked against the regions of interest before it is read.

Members: ``format`` (:data:`FORMAT`), ``names`` (V,) str, ``rois`` (V, 4) int (x0, y0, width,
height in sensor pixels), ``object_pixel_mm`` (V,) float, ``read_noise_e`` (), and per view i
``measured_i`` and ``predicted_i`` (height, width) float32 photoelectrons per frame, ``frames_i``
(height, width) int32 usable frames (0: a pixel not used).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optics.atomic import atomic_path
from recon.errors import DataError
from recon.io.runspec import SAFE_VIEW_NAME

__all__ = ["FORMAT", "ViewImage", "load_view_images", "save_view_images"]

FORMAT = "recon.views/1"
_HEADER_BYTES = 1024  # an .npy header is at most this long for these arrays


@dataclass(frozen=True)
class ViewImage:
    """One view's images: what was measured and what the fit predicts, photoelectrons per frame.

    Attributes:
        name: the view's name.
        roi: (x0, y0, width, height) of the region of interest, sensor pixels.
        object_pixel_mm: the sensor pixel's size at the focal plane, mm (for a scale bar).
        measured: (height, width) mean photoelectrons per usable frame.
        predicted: (height, width) the fit's expected photoelectrons per frame.
        frames: (height, width) usable frames per pixel.
    """

    name: str
    roi: tuple[int, int, int, int]
    object_pixel_mm: float
    measured: np.ndarray
    predicted: np.ndarray
    frames: np.ndarray

    def residual(self, read_noise_e: float) -> np.ndarray:
        """(height, width) (measured − predicted) / σ, σ² = (predicted + σ²_read) / frames; NaN where unused.

        As :func:`recon.fitting.prediction.residual_stats` normalises them: ≈ N(0, 1) at the noise.
        """
        frames = self.frames.astype(np.float64)
        sigma = np.sqrt((np.maximum(self.predicted, 0.0) + read_noise_e**2) / np.maximum(frames, 1.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (self.measured - self.predicted) / sigma
        return np.where(frames > 0, z, np.nan).astype(np.float32)


def save_view_images(path: str | os.PathLike, images: list[ViewImage], read_noise_e: float) -> Path:
    """Write ``images`` to ``path`` (``views.npz``), atomically; returns the path."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "names": np.array([v.name for v in images], dtype=str),
        "rois": np.array([v.roi for v in images], dtype=np.int64).reshape(len(images), 4),
        "object_pixel_mm": np.array([v.object_pixel_mm for v in images], dtype=np.float64),
        "read_noise_e": np.array(float(read_noise_e)),
    }
    for i, v in enumerate(images):
        arrays[f"measured_{i}"] = np.ascontiguousarray(v.measured, dtype=np.float32)
        arrays[f"predicted_{i}"] = np.ascontiguousarray(v.predicted, dtype=np.float32)
        arrays[f"frames_{i}"] = np.ascontiguousarray(v.frames, dtype=np.int32)
    # The images (noisy floats, which deflate shrinks by about a tenth) are stored as they are; the
    # rest (frame counts, names) deflated at level 1: far quicker than np.savez_compressed.
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED,
                                                   compresslevel=1) as archive:
        for name, array in arrays.items():
            how = zipfile.ZIP_STORED if array.dtype == np.float32 else zipfile.ZIP_DEFLATED
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = how
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return path


def load_view_images(path: str | os.PathLike) -> tuple[list[ViewImage], float]:
    """Read a :func:`save_view_images` file: (images, read noise e⁻).

    Raises:
        DataError: missing, not such an archive, another format, a member missing, of another
            shape or type than its region of interest says, declared larger than that, or not finite.
    """
    path = Path(path)

    def bad(problem: str) -> DataError:
        return DataError(f"views: {path} {problem}; rerun recon fit to write it again")

    if not path.is_file():
        raise DataError(f"views: {path} does not exist (recon fit writes views.npz beside density.tif; "
                        "refit to draw the views of an older fit)")
    try:
        with zipfile.ZipFile(path) as archive:
            declared = {info.filename.removesuffix(".npy"): info.file_size for info in archive.infolist()}
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise bad(f"is not a views archive ({exc})") from None
    with archive:
        def member(name: str, limit: int) -> np.ndarray:
            if name not in declared:
                raise bad(f"has no {name!r}")
            if declared[name] > limit + _HEADER_BYTES:
                raise bad(f"declares {declared[name]} bytes for {name!r}, more than its size allows")
            try:
                return archive[name]
            except (OSError, ValueError) as exc:
                raise bad(f"holds an unreadable {name!r} ({exc})") from None

        if str(member("format", 64)) != FORMAT:
            raise bad(f"is not in the format {FORMAT}")
        rois = member("rois", 8 * 4 * 100_000)
        if rois.ndim != 2 or rois.shape[1] != 4 or rois.dtype.kind not in "iu" or (rois[:, 2:] < 1).any():
            raise bad("has regions of interest that are not (x0, y0, width, height) rows of positive sizes")
        views = len(rois)
        names = member("names", 4 * 256 * views)
        scales = member("object_pixel_mm", 8 * views)
        noise = member("read_noise_e", 8)
        if (names.shape != (views,) or names.dtype.kind != "U" or scales.shape != (views,)
                or noise.shape != () or not np.isfinite(scales).all() or not np.isfinite(noise)):
            raise bad("has names, pixel sizes or a read noise that do not match its regions of interest")
        for name in names.tolist():  # a name becomes part of a file name (recon render's view_<name>.png)
            if not SAFE_VIEW_NAME.fullmatch(name):
                raise bad(f"names a view {name!r}, which cannot name a file")
        if len(set(names.tolist())) != views:
            raise bad("names a view twice")
        images = []
        for i, (x0, y0, w, h) in enumerate(rois.tolist()):
            arrays = [member(f"{kind}_{i}", 4 * w * h) for kind in ("measured", "predicted", "frames")]
            kinds = ("f", "f", "i")
            if any(a.shape != (h, w) or a.dtype.kind != k for a, k in zip(arrays, kinds, strict=True)):
                raise bad(f"holds images of view {names[i]!r} that are not {h} × {w}")
            if not (np.isfinite(arrays[0]).all() and np.isfinite(arrays[1]).all()):
                raise bad(f"holds NaN or inf in view {names[i]!r}")
            images.append(ViewImage(str(names[i]), (x0, y0, w, h), float(scales[i]), *arrays))
    return images, float(noise)
