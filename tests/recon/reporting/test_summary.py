"""The lines printed at the end of a command: µm formatting, the FSC line, the fit summary."""

import math

import pytest

from recon.reporting.summary import UNDEFINED_NOTE, format_um, summary_line, summary_lines


def _report(**changes):
    report = {
        "maps": {"a": "half1.tif", "b": "half2.tif"},
        "threshold": "0.143",
        "resolution_um": 87.5,
        "resolution_interpolated_um": 80.123456,
        "reached_nyquist": False,
        "nyquist_um": 40.0,
        "directional": None,
    }
    report.update(changes)
    return report


def _metrics(**changes):
    metrics = {
        "atoms": 123456.789,
        "density_unit": "atoms/mm^3",
        "centroid_mm": [0.0012, -0.5, 0.25],
        "width_mm": [0.5, 0.4996, 0.1],
        "steps": 200,
        "time_s": 12.345,
        "rays_per_s": 1234567.8,
        "backend": "torch",
        "device": "cpu",
        "final_loss": 1.23456,
    }
    metrics.update(changes)
    return metrics


def _fsc(**changes):
    fsc = {"threshold": "0.5", "resolution_um": 100.0, "resolution_interpolated_um": 93.21,
           "reached_nyquist": False, "nyquist_um": 50.0, "resolution_xyz_um": None, "sphericity": None}
    fsc.update(changes)
    return fsc


@pytest.mark.parametrize(("value", "text"), [
    (None, "—"),
    (100.0, "100 µm"),
    (87.654321, "87.65 µm"),
    (12345.6, "1.235e+04 µm"),
    (math.inf, "inf µm"),
])
def test_format_um(value, text):
    assert format_um(value) == text


def test_summary_line_without_directional_figures_or_nyquist():
    assert summary_line(_report()) == "FSC half1.tif vs half2.tif at 0.143: 87.5 µm (interpolated 80.12 µm)"


def test_summary_line_with_nyquist_and_directional_figures():
    directional = {"resolution_x_um": 60.0, "resolution_y_um": None, "resolution_z_um": 123.456,
                   "sphericity": 0.87654}
    line = summary_line(_report(reached_nyquist=True, resolution_um=40.0, directional=directional))
    assert line == ("FSC half1.tif vs half2.tif at 0.143: 40 µm (interpolated 80.12 µm), reached Nyquist "
                    "(40 µm); along x/y/z 60 µm / — / 123.5 µm, sphericity 0.877")


def test_summary_line_of_an_undefined_resolution():
    line = summary_line(_report(resolution_um=None, resolution_interpolated_um=None))
    assert "at 0.143: — (interpolated —)" in line


def test_summary_lines_of_a_fit_in_micrometres():
    lines = summary_lines(_metrics())
    assert lines == [
        "atoms 1.235e+05, centroid (µm) 1.2, -500.0, 250.0, widths σ (µm) 500.0, 499.6, 100.0",
        "200 steps in 12.3 s, 1,234,568 rays/s, backend torch on cpu, final loss 1.2346",
    ]


def test_summary_lines_with_a_nan_centroid_print_the_raw_values():
    nan = math.nan
    lines = summary_lines(_metrics(atoms=0.0, centroid_mm=[nan, nan, nan], width_mm=[nan, nan, nan]))
    assert lines[0] == "atoms 0, centroid (µm) nan, nan, nan, widths σ (µm) nan, nan, nan"
    relative = summary_lines(_metrics(density_unit="relative"))[0]
    assert relative.startswith("total 1.235e+05 (relative units), centroid (µm) 1.2, ")  # not "atoms"
    assert len(lines) == 2


def test_summary_lines_with_fsc_truth_and_split_halves():
    halves = {"split": "thinning",
              "fsc": _fsc(threshold="0.143", resolution_um=50.0, resolution_interpolated_um=47.5,
                          reached_nyquist=True, nyquist_um=50.0, resolution_xyz_um=[50.0, 55.5, None])}
    lines = summary_lines(_metrics(fsc_truth=_fsc(), split_halves=halves))
    assert len(lines) == 5
    assert lines[2] == "resolution against the truth (FSC 0.5): 100 µm, interpolated 93.21 µm"
    assert lines[3] == ("resolution between the split halves (FSC 0.143): 50 µm, interpolated 47.5 µm "
                        "(reached Nyquist, 50 µm); x/y/z 50 µm / 55.5 µm / —")
    assert lines[4] == UNDEFINED_NOTE  # a "—" is explained where it shows


def test_summary_lines_only_the_comparisons_present():
    lines = summary_lines(_metrics(split_halves={"split": "frames", "fsc": _fsc(threshold="0.143")}))
    assert len(lines) == 3 and lines[2].startswith("resolution between the split halves (FSC 0.143)")


def _check(**changes):
    fit = {"converged": True, "stopped_by": "held-out", "best_step": 40, "heldout_deviance": 1.321754,
           "held_out_pixels": 45487, "max_steps": 256, "checks": [[4, 1.7], [40, 1.321754]]}
    fit.update(changes)
    return fit


def test_the_convergence_line_says_where_the_held_out_pixels_stopped_the_fit():
    converged = {**_metrics(), "converged": True, "convergence": [_check()]}
    assert summary_lines(converged)[-1] == ("converged: held-out deviance 1.32175 best at step 40, no better "
                                           "in the checks after it")
    at_limit = {**_metrics(), "convergence": [_check(converged=False, stopped_by="steps")]}
    assert summary_lines(at_limit)[-1] == ("NOT converged: stopped at the step limit (256, --steps); "
                                          "held-out deviance best at step 40")
    no_holdout = {**_metrics(), "convergence": [_check(converged=False, stopped_by="passes",
                                                       heldout_deviance=None)]}
    assert summary_lines(no_holdout)[-1].endswith("(256, max_passes); no pixels held out (holdout = 0)")
    halves = {**_metrics(), "convergence": [_check(), _check(converged=False, stopped_by="steps")]}
    line = summary_lines(halves)[-1]
    assert line.startswith("half 1: converged") and " | half 2: NOT converged" in line


def test_the_fit_against_its_truth_is_one_line_of_signed_errors():
    from recon.analysis.moments import truth_errors
    from recon.reporting.summary import truth_text

    fit = {"atoms": 1010.0, "centroid_mm": [0.0032, -0.001, 0.0], "width_mm": [0.505, 0.396, 0.3]}
    truth = {"atoms": 1000.0, "centroid_mm": [0.0, 0.0, 0.0], "width_mm": [0.5, 0.4, 0.3]}
    against = truth_errors(fit, truth)
    assert against["atoms_error"] == pytest.approx(0.01) and against["truth"] == truth
    assert against["centroid_error_um"] == pytest.approx([3.2, -1.0, 0.0])
    assert against["width_error"] == pytest.approx([0.01, -0.01, 0.0])
    text = truth_text(against)
    assert text == "atoms +1.00 %, centroid +3.2, −1.0, +0.0 µm, widths +1.0, −1.0, +0.0 %"
    assert "against the truth: " + text in summary_lines(_metrics(against_truth=against))
    assert not any(line.startswith("against") for line in summary_lines(_metrics()))


def test_the_shot_noise_limit_is_one_line_in_percent_and_micrometres():
    limit = {"model": "m", "atoms_sd": 850.0, "atoms_relative_sd": 0.000858,
             "centroid_sd_um": [0.497, 0.398, 0.4876], "width_sd_um": [0.512, 0.4058, 0.649]}
    lines = summary_lines(_metrics(shot_noise_limit=limit))
    assert lines[-1] == ("shot-noise limit of a Gaussian cloud (Cramér–Rao, 1 σ): atoms ±0.0858 %, centroid "
                         "±0.5, 0.4, 0.49 µm, widths ±0.51, 0.41, 0.65 µm")
