"""`recon fsc`: FSC comparisons written where they belong (``fsc-truth/``, ``fsc-halves/``, or ``--out``).

A comparison is written into its own sub-directory of a fit output — ``fsc-truth/`` (threshold
0.5, the fit against the simulation's ``truth.tif``) or ``fsc-halves/`` (threshold 0.143, half
map 1 against half map 2) — as ``fsc.csv``, ``fsc.json`` and ``fsc.png``
(:mod:`recon.reporting.fsc_files`), and the fit's report is rewritten to show it.
"""

from __future__ import annotations

import os
from pathlib import Path

from recon.analysis.resolution import (
    compare_halves,
    compare_volumes,
    compare_with_truth,
    fsc_report,
    volume_file,
)
from recon.errors import ConfigError
from recon.fitting.outdir import OutputLock, read_config_json
from recon.io.volume import Volume, read_volume
from recon.reporting.fsc_files import write_fsc_outputs
from recon.reporting.report import refresh_report

__all__ = ["compare_paths", "existing_fsc_outputs", "fsc_halves", "fsc_truth", "recorded_truth"]


def fsc_truth(volume: Volume, truth: Volume | str | Path, out_dir: Path, *, mask: str | None = None) -> dict:
    """FSC of a reconstruction against the truth (threshold 0.5), written to ``out_dir/fsc-truth/``.

    Args:
        volume: the reconstruction (any box-shaped grid of cubic voxels).
        truth: the true density, or the path of its TIFF; resampled onto ``volume``'s grid.
        out_dir: the fit output directory (or any directory).
        mask: ``None`` or ``"sphere"`` (see :func:`recon.analysis.resolution.compare_volumes`).

    Returns:
        The ``fsc.json`` dict.
    """
    result = compare_with_truth(volume, truth, mask=mask)
    write_fsc_outputs(result, out_dir / "fsc-truth")
    return fsc_report(result)


def fsc_halves(half1: Volume, half2: Volume, out_dir: Path, *, mask: str | None = None) -> dict:
    """FSC of two independent half maps (threshold 0.143), written to ``out_dir/fsc-halves/``.

    Returns:
        The ``fsc.json`` dict.
    """
    result = compare_halves(half1, half2, mask=mask)
    write_fsc_outputs(result, out_dir / "fsc-halves")
    return fsc_report(result)


def recorded_truth(fit_dir: Path) -> Path | None:
    """The truth volume a fit recorded in its config.json (``truth``), or None.

    config.json may come from anyone: only a string is taken, as a path, and nothing in it runs.
    """
    truth = read_config_json(fit_dir).get("truth")
    return Path(truth) if isinstance(truth, str) and truth and "\x00" not in truth else None


def existing_fsc_outputs(first: Path, out: Path | None = None) -> set[Path]:
    """The directories :func:`compare_paths` may write for these arguments that already hold an FSC.

    ``recon fsc`` says when it replaces one (a fit's own comparison with its truth, for example).
    """
    base = out or (first if first.is_dir() else Path("fsc"))
    return {d for d in (base, base / "fsc-truth", base / "fsc-halves") if (d / "fsc.json").is_file()}


def compare_paths(
    first: str | os.PathLike,
    second: str | os.PathLike | None = None,
    *,
    truth: str | os.PathLike | None = None,
    threshold: str | None = None,
    mask: str | None = None,
    out: str | os.PathLike | None = None,
) -> tuple[dict, Path]:
    """What ``recon fsc`` compares, by its arguments, written where it belongs.

    * ``first`` a fit directory and ``truth``: the fit's density.tif against the truth (0.5),
      into ``first/fsc-truth/``; without ``truth``: its half1.tif against half2.tif (0.143),
      into ``first/fsc-halves/``, or, without half maps, against the truth its fit recorded
      (:func:`recorded_truth`). The fit's report.html is rewritten with the section.
    * ``first`` a TIFF and ``truth``: against the truth (0.5), into ``out/fsc-truth/``.
    * two TIFFs: ``threshold`` (default 0.143), same grid required, into ``out`` (default
      ``./fsc``).

    Returns:
        The ``fsc.json`` dict, and the directory written.
    """
    first, second, truth, out = (None if p is None else Path(p) for p in (first, second, truth, out))
    if first.is_dir():
        if second is not None:
            raise ConfigError(f"fsc: {first} is a fit directory; compare it with --truth, or pass two TIFFs")
        if threshold is not None:
            raise ConfigError("fsc: a fit directory uses 0.5 against --truth and 0.143 between its halves; "
                              "pass two TIFF files to choose --threshold")
        target = out or first
        with OutputLock(target, what="fsc"):  # not while a fit writes that directory
            if truth is not None:
                report = fsc_truth(read_volume(volume_file(first / "density.tif")), truth, target, mask=mask)
                sub = "fsc-truth"
            elif (first / "half1.tif").is_file() and (first / "half2.tif").is_file():
                report = fsc_halves(read_volume(first / "half1.tif"), read_volume(first / "half2.tif"),
                                    target, mask=mask)
                sub = "fsc-halves"
            else:
                recorded = recorded_truth(first)
                if recorded is None:
                    raise ConfigError(f"fsc: {first} holds no half maps (half1.tif, half2.tif) and its fit "
                                      "recorded no truth; pass --truth RUN/truth.tif, or fit with "
                                      "--split-halves")
                if not recorded.is_file():
                    raise ConfigError(f"fsc: the truth {first}'s fit was compared with, {recorded}, is no "
                                      "longer there; pass --truth with where it is now")
                report = fsc_truth(read_volume(volume_file(first / "density.tif")), recorded, target,
                                   mask=mask)
                sub = "fsc-truth"
            if target == first:
                refresh_report(first)
        return report, target / sub
    if (second is None) == (truth is None):
        raise ConfigError("fsc: pass two volumes (recon fsc A.tif B.tif), or one with --truth T.tif, "
                          "or a fit directory")
    target = out or Path("fsc")
    a = read_volume(volume_file(first))
    if truth is not None:
        if threshold not in (None, "0.5"):
            raise ConfigError("fsc: the comparison with --truth uses the 0.5 threshold; "
                              "leave --threshold out")
        return fsc_truth(a, truth, target, mask=mask), target / "fsc-truth"
    result = compare_volumes(a, read_volume(volume_file(second)), threshold=threshold or "0.143", mask=mask,
                             labels=(first.name, second.name))
    write_fsc_outputs(result, target)
    return fsc_report(result), target
