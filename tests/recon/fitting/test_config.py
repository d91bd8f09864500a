"""Fit settings: defaults, checks naming the key, the TOML file and its precedence, JSON, the field."""

import json
import math
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from optics.tomlio import read_toml
from recon.errors import ConfigError
from recon.fitting.config import FitConfig, config_dict, field_config, field_factory, load_fit_config
from recon.model.fields.config import FIELD_KINDS, FieldConfig
from recon.model.hashgrid import HashGridConfig

BOX_MIN, BOX_MAX = (-1.2, -1.0, -0.8), (1.2, 1.0, 0.8)
SMALL_FIELDS = {
    "hashgrid": {"hidden_width": 16,
                 "encoding": {"n_levels": 2, "log2_hashmap_size": 10, "base_resolution": 4}},
    "voxel": {"voxel_resolution": [6, 5, 4]},
    "siren": {"siren_hidden_layers": 1, "siren_width": 16},
    "fourier": {"mlp_hidden_layers": 2, "mlp_width": 16, "fourier_features": 8},
    "gauss": {"mlp_hidden_layers": 2, "mlp_width": 16},
    "tensorf": {"tensorf_rank": 4, "tensorf_resolution": [8, 6, 5]},
    "splitnet": {"mlp_hidden_layers": 2, "mlp_width": 16},
    "mulfagrid": {"mulfagrid_resolution": [6, 5, 4], "mulfagrid_channels": 2, "mulfagrid_width": 8},
}


def _toml(tmp_path, text, name="fit.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_validate_and_are_what_the_docs_say():
    cfg = FitConfig()
    cfg.validate()
    assert (cfg.field, cfg.solver, cfg.backend, cfg.device, cfg.loss, cfg.model) == (
        "voxel", "auto", "auto", "auto", "poisson", "emission")
    assert cfg.em and (cfg.subsets, cfg.holdout, cfg.patience) == (32, 0.05, 3)
    assert not FitConfig(field="hashgrid").em and not FitConfig(refine="mirrors").em
    assert not FitConfig(model="emission-absorption").em and not FitConfig(tv_weight=0.1).em
    assert cfg.pool_samples == 8 and cfg.samples_per_step == 0 and cfg.refine == ""
    assert load_fit_config(None) == cfg
    assert FitConfig().field_options is not FitConfig().field_options  # no shared mutable default


@pytest.mark.parametrize("key, value, expected", [
    ("field", "mlp", "hashgrid, voxel, siren, fourier, gauss"),
    ("backend", "cuda", "auto, torch or tcnn"),
    ("device", "gpu", "auto, cpu or cuda"),
    ("steps", 0, "≥ 1"),
    ("solver", "lbfgs", "auto, em, adam, grid"),
    ("subsets", 0, "≥ 1"),
    ("em_power", 0.5, "in 1 … 3"),
    ("em_power", float("nan"), "in 1 … 3"),
    ("subset_block", 0, "≥ 1 and ≤ 2²⁰"),
    ("holdout", 0.6, "in 0 … 0.5"),
    ("max_passes", 0, "> 0"),
    ("patience", 0, "≥ 1"),
    ("stop_significance", -1.0, "in 0 … 10"),
    ("steps", 10**9, "≤ 10⁸"),
    ("batch_pixels", 0, "≥ 1"),
    ("pool_samples", 0, "≥ 1"),
    ("pool_samples", 257, "≤ 256"),
    ("pool_sampling", "halton", "random or sobol"),
    ("samples_per_step", 9, "in 0 … pool_samples"),
    ("samples_per_step", -1, "in 0 … pool_samples"),
    ("defocused_rays", 0, "≥ 1 and ≤ 64"),
    ("defocused_rays", 65, "≥ 1 and ≤ 64"),
    ("step_mm", -0.01, "≥ 0 (0 = automatic)"),
    ("step_mm", 1e-5, "1e-4 … 10 mm"),
    ("step_mm", 20.0, "1e-4 … 10"),
    ("lr", -1e-3, "> 0"),
    ("loss", "l1", "poisson"),
    ("model", "absorption", "emission"),
    ("tv_weight", -1.0, "≥ 0"),
    ("attenuation", 0.0, "> 0"),
    ("voxel_size_mm", -0.1, "≥ 0"),
    ("voxel_size_mm", 1e-5, "1e-4 … 100"),
    ("seed", -1, "≥ 0"),
    ("checkpoint_every", 0, "≥ 1"),
    ("log_every", 0, "≥ 1"),
])
def test_every_invalid_value_is_a_config_error_naming_the_key(key, value, expected):
    cfg = FitConfig(**{key: value})
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    message = str(info.value)
    assert f"'{key}'" in message and expected in message and repr(value) in message


def test_a_bad_final_learning_rate_is_named():
    with pytest.raises(ConfigError, match="lr_final"):
        FitConfig(lr_final=0.0).validate()


def test_a_negative_sparsity_weight_is_named():
    with pytest.raises(ConfigError, match="sparsity_weight.*-1.0"):
        FitConfig(sparsity_weight=-1.0).validate()


def test_a_wrongly_typed_override_is_a_config_error():
    with pytest.raises(ConfigError, match="steps"):
        load_fit_config(None, steps="10")


@pytest.mark.parametrize("key, value", [("lr", math.inf), ("lr_final", math.nan), ("step_mm", math.inf),
                                        ("step_mm", math.nan), ("attenuation", math.inf),
                                        ("tv_weight", math.nan)])
def test_a_non_finite_override_is_a_config_error(key, value):
    with pytest.raises(ConfigError, match=f"'{key}' must be"):
        load_fit_config(None, **{key: value})


def test_refinement_settings_are_checked():
    FitConfig(refine="mirrors,pose,focus", steps=10, refine_warmup=9).validate()
    with pytest.raises(ConfigError, match="distortion cannot be refined during a fit"):
        FitConfig(refine="mirrors,distortion").validate()
    with pytest.raises(ConfigError, match="fit --refine: 'lens' is not a list of"):
        FitConfig(refine="lens").validate()
    with pytest.raises(ConfigError, match=r"'refine_warmup' must be in 0 … steps − 1 \(9\)"):
        FitConfig(refine="mirrors", steps=10, refine_warmup=10).validate()
    with pytest.raises(ConfigError, match="'refine_lr' > 0, got 300 and 0.0"):
        FitConfig(refine="mirrors", refine_lr=0.0).validate()
    FitConfig(refine="", refine_warmup=10**6).validate()  # no refinement: its settings are unused


def test_load_fit_config_reads_every_kind_of_value(tmp_path):
    path = _toml(tmp_path, """
field = "voxel"
steps = 40
lr = 1          # an integer is a fine float
step_mm = 0.05
refine = "mirrors"
refine_warmup = 10
[field_options]
voxel_resolution = [8, 8, 4]
""")
    cfg = load_fit_config(path)
    assert (cfg.field, cfg.steps, cfg.lr, cfg.step_mm, cfg.refine) == ("voxel", 40, 1, 0.05, "mirrors")
    assert cfg.field_options == {"voxel_resolution": [8, 8, 4]}
    assert cfg.batch_pixels == FitConfig().batch_pixels  # what the file leaves out is the default


def test_a_missing_or_broken_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; pass an existing TOML file"):
        load_fit_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_fit_config(_toml(tmp_path, "steps = = 3\n"))


def test_an_unknown_key_is_a_config_error_listing_the_allowed(tmp_path):
    path = _toml(tmp_path, "steps = 10\nstpes = 20\n")
    with pytest.raises(ConfigError, match="unknown key 'stpes'; allowed: attenuation, backend") as info:
        load_fit_config(path)
    assert str(path) in str(info.value)
    assert all(f.name in str(info.value) for f in fields(FitConfig))


@pytest.mark.parametrize("line, key, expected", [
    ('steps = "100"', "steps", "an integer"),
    ("steps = 10.0", "steps", "an integer"),
    ("steps = true", "steps", "an integer"),
    ('lr = "fast"', "lr", "a finite number"),
    ("lr = false", "lr", "a finite number"),
    ("lr = nan", "lr", "a finite number"),
    ("step_mm = inf", "step_mm", "a finite number"),
    ("attenuation = -inf", "attenuation", "a finite number"),
    ("field = 3", "field", "a string"),
    ('field_options = "big"', "field_options", "a table"),
])
def test_a_wrongly_typed_value_is_a_config_error_naming_the_key(tmp_path, line, key, expected):
    path = _toml(tmp_path, line + "\n")
    with pytest.raises(ConfigError, match=f"key '{key}' must be {expected}, got .*; fix the fit config"):
        load_fit_config(path)


def test_values_from_the_file_are_validated_too(tmp_path):
    with pytest.raises(ConfigError, match="'steps' must be ≥ 1 .*, got 0$"):
        load_fit_config(_toml(tmp_path, "steps = 0\n"))


def test_overrides_beat_the_file_which_beats_the_base_which_beats_the_defaults(tmp_path):
    path = _toml(tmp_path, "steps = 200\nlr = 0.05\n")
    base = {"steps": 100, "lr": 0.02, "seed": 7}
    cfg = load_fit_config(path, base=base, steps=300, batch_pixels=None, seed=None)
    assert cfg.steps == 300  # override > TOML > base
    assert cfg.lr == 0.05  # TOML > base
    assert cfg.seed == 7  # base > default; a None override is ignored
    assert cfg.batch_pixels == FitConfig().batch_pixels  # None override: the default stays
    assert base == {"steps": 100, "lr": 0.02, "seed": 7}  # the base is not modified
    assert load_fit_config(None, base=base).steps == 100


def test_an_unknown_override_or_base_key_is_a_config_error():
    with pytest.raises(ConfigError, match="fit config: .*'stpes'"):
        load_fit_config(None, stpes=3)
    with pytest.raises(ConfigError, match="fit config: .*'old_key'"):
        load_fit_config(None, base={"old_key": 1})


def test_config_dict_is_json_ready_and_rebuilds_the_config():
    cfg = FitConfig(field="voxel", steps=12, field_options={"voxel_resolution": (4, 5, 6), "x": {"y": 1}})
    d = config_dict(cfg)
    assert json.loads(json.dumps(d)) == d
    assert d["field_options"]["voxel_resolution"] == [4, 5, 6]  # tuples become lists
    assert set(d) == {f.name for f in fields(FitConfig)}
    assert FitConfig(**d) == FitConfig(field="voxel", steps=12,
                                       field_options={"voxel_resolution": [4, 5, 6], "x": {"y": 1}})
    d["field_options"]["x"]["y"] = 2
    assert cfg.field_options["x"] == {"y": 1}  # a copy, not a view


@pytest.mark.parametrize("kind", FIELD_KINDS)
def test_field_factory_builds_the_field_starting_at_the_mean_density(kind):
    cfg = FitConfig(field=kind, backend="torch", seed=3, field_options=SMALL_FIELDS[kind])
    field = field_factory(cfg, BOX_MIN, BOX_MAX, 2.5e4, "cpu")
    assert field.kind == kind and field.backend == "torch"
    assert field.config.init_density == 2.5e4
    assert torch.allclose(field.box_min_mm, torch.tensor(BOX_MIN))
    assert torch.allclose(field.box_max_mm, torch.tensor(BOX_MAX))
    lo, hi = torch.tensor(BOX_MIN), torch.tensor(BOX_MAX)
    points = lo + (hi - lo) * torch.rand(4000, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        density = field(points)
    assert float(density.mean()) == pytest.approx(2.5e4, rel=0.02)
    assert float(density.min()) > 0


def test_field_factory_turns_the_encoding_table_into_a_hash_grid_config():
    cfg = FitConfig(backend="torch", field_options=SMALL_FIELDS["hashgrid"])
    field = field_factory(cfg, BOX_MIN, BOX_MAX, 1.0, "cpu")
    assert field.config.encoding == HashGridConfig(n_levels=2, log2_hashmap_size=10, base_resolution=4)
    assert cfg.field_options["encoding"] == SMALL_FIELDS["hashgrid"]["encoding"]  # not replaced in place


def test_field_factory_is_deterministic_in_the_seed():
    def params(seed):
        cfg = FitConfig(field="siren", seed=seed, field_options=SMALL_FIELDS["siren"])
        return torch.cat([p.detach().reshape(-1) for p in field_factory(cfg, BOX_MIN, BOX_MAX, 1.0, "cpu")
                          .parameters()])

    assert torch.equal(params(1), params(1)) and not torch.equal(params(1), params(2))


def test_field_config_is_the_checked_field_configuration_without_building_it():
    cfg = FitConfig(field="hashgrid", field_options={**SMALL_FIELDS["hashgrid"], "activation": "exp"})
    got = field_config(cfg, 3.0)
    assert got == FieldConfig(kind="hashgrid", init_density=3.0, hidden_width=16, activation="exp",
                              encoding=HashGridConfig(n_levels=2, log2_hashmap_size=10, base_resolution=4))
    assert field_config(FitConfig(field="voxel")).init_density == 1.0
    assert field_config(FitConfig(field="siren")).kind == "siren"
    with pytest.raises(ConfigError, match="HashGridConfig: unknown keys"):
        field_config(FitConfig(field_options={"encoding": {"levels": 2}}))


def test_bad_field_options_are_refused_when_the_config_is_loaded(tmp_path):
    path = _toml(tmp_path, 'field = "voxel"\n[field_options]\nvoxels = 8\n')
    expected = r"^fit config: 'field_options': FieldConfig: unknown keys \['voxels'\]"
    with pytest.raises(ConfigError, match=expected + r".*; fix \[field_options\] of --config$"):
        load_fit_config(path)
    with pytest.raises(ConfigError, match="'field_options': FieldConfig: activation must be one of"):
        load_fit_config(None, field_options={"activation": "relu"})


def test_field_factory_errors_are_config_errors():
    with pytest.raises(ConfigError, match="unknown keys"):
        field_factory(FitConfig(field="voxel", field_options={"voxels": 8}), BOX_MIN, BOX_MAX, 1.0, "cpu")
    with pytest.raises(ConfigError, match="backend 'tcnn' applies to hashgrid fields only"):
        field_factory(FitConfig(field="voxel", backend="tcnn"), BOX_MIN, BOX_MAX, 1.0, "cpu")
    with pytest.raises(ConfigError, match="init_density must be > 0"):
        field_factory(FitConfig(field="voxel", field_options=SMALL_FIELDS["voxel"]), BOX_MIN, BOX_MAX, 0.0,
                      "cpu")


@pytest.mark.parametrize("settings, expected", [
    ({"solver": "em", "field": "hashgrid"}, "solver 'em' fits a voxel field"),
    ({"solver": "em", "model": "emission-absorption"}, "solver 'em' fits a voxel field"),
    ({"solver": "em", "tv_weight": 0.1}, "by the Poisson likelihood alone"),
    ({"solver": "em", "loss": "mse"}, "by the Poisson likelihood alone"),
    ({"field_options": {"activation": "softplus"}}, "needs the linear activation"),
])
def test_em_refuses_what_it_cannot_fit(settings, expected):
    with pytest.raises(ConfigError, match=expected):
        FitConfig(**settings).validate()
    FitConfig(**{**settings, "solver": "adam"}).validate()  # the gradient solver takes it


def test_a_grid_too_large_to_hold_is_refused_before_any_work(tmp_path):
    from recon.fitting.config import check_grid_sizes
    from recon.fitting.data import load_fit_data
    from tests.micro import make_micro_case

    data = load_fit_data(make_micro_case(tmp_path)["run"])[0]
    check_grid_sizes(data, FitConfig())  # the defaults hold
    with pytest.raises(ConfigError, match=r"output grid \(voxel_size_mm\) would be 12000×12000×12000 voxels "
                                          r"\(6\.44e\+03 GiB"):
        check_grid_sizes(data, FitConfig(voxel_size_mm=0.0001))
    with pytest.raises(ConfigError, match=r"voxel field .* 100000×100000×100000 voxels"):
        check_grid_sizes(data, FitConfig(field_options={"voxel_resolution": 100000}))
    check_grid_sizes(data, FitConfig(field="hashgrid", field_options={}))


def test_the_example_file_in_data_holds_every_key_at_its_default():
    path = Path(__file__).resolve().parents[3] / "data" / "fit_defaults.toml"
    assert set(read_toml(path, "fit config")) == {f.name for f in fields(FitConfig)}
    assert load_fit_config(path) == FitConfig()


def test_automatic_voxels_and_strata_scale_with_the_box(tiny_run):
    """The defaults of data/run042 hold for a box of its size, and a box many times the cloud gets a
    grid and strata it can afford (256 voxels along the longest edge; strata of 1.6 voxels); the voxel
    field's grid is density.tif's unless field_options.voxel_resolution says otherwise."""
    import dataclasses

    from optics.system import Box
    from recon.fitting.config import auto_step_mm, fit_voxel_mm, plan_line, resolved
    from recon.fitting.data import auto_voxel_mm, density_grid, load_fit_data, object_pixel_mm

    data, _, _ = load_fit_data(Path(tiny_run))
    assert object_pixel_mm(data) == 0.0175 and auto_voxel_mm(data) == 0.0175  # the tiny box: ±1.2 mm
    cfg = FitConfig()
    assert cfg.step_mm == 0 and fit_voxel_mm(cfg, data) == pytest.approx(2.4 / 137)
    assert auto_step_mm(cfg, data) == 0.03 and resolved(cfg, data).step_mm == 0.03  # run042's strata
    assert density_grid(data, 0.0)[0] == (137, 137, 137)
    assert resolved(cfg, data).field_options == {"voxel_resolution": [137, 137, 137]}
    assert resolved(resolved(cfg, data), data) == resolved(cfg, data)
    given = FitConfig(field_options={"voxel_resolution": 96})
    assert resolved(given, data).field_options == {"voxel_resolution": 96}  # a given grid is kept
    assert fit_voxel_mm(given, data) == pytest.approx(2.4 / 96) and auto_step_mm(given, data) == 0.04
    assert "voxel field 96×96×96" in plan_line(given, data)
    assert "voxel field 137×137×137" in plan_line(cfg, data)
    # an output grid coarser than VOXEL_FIELD_MIN along its longest edge is divided: 60 → 3 × 60
    assert resolved(FitConfig(voxel_size_mm=0.04), data).field_options == {"voxel_resolution": [180] * 3}
    assert resolved(FitConfig(voxel_size_mm=0.0185), data).field_options == {"voxel_resolution": [129] * 3}
    assert resolved(FitConfig(field="hashgrid"), data).field_options == {}  # only a voxel field has one
    assert resolved(FitConfig(step_mm=0.05), data).step_mm == 0.05  # a given stratum is kept
    assert "strata 0.03 mm (automatic" in plan_line(cfg, data) and "object pixel" not in plan_line(cfg, data)

    system = data.system
    big = dataclasses.replace(data, system=dataclasses.replace(system, volume=Box(
        system.volume.min_mm * 12.5, system.volume.max_mm * 12.5)))  # ±15 mm
    assert auto_voxel_mm(big) == pytest.approx(0.117) and density_grid(big, 0.0)[0] == (256, 256, 256)
    assert auto_step_mm(cfg, big) == pytest.approx(0.188)  # 1.6 × the voxel field's 30 mm / 256, 3 digits
    hashgrid = FitConfig(field="hashgrid")
    assert auto_step_mm(hashgrid, big) == pytest.approx(0.187)  # 1.6 × the output voxel, 3 digits
    coarse = FitConfig(field_options={"voxel_resolution": 128})
    assert auto_step_mm(coarse, big) == pytest.approx(0.375)  # 1.6 × 30 mm / 128
    line = plan_line(cfg, big)
    assert "256×256×256 of 117 µm" in line and "would make 1714 along the box's longest edge" in line
    assert density_grid(big, 0.05)[0] == (600, 600, 600)  # a voxel that is given is kept
