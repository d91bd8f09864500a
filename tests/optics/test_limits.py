"""Numbers read from files: finite, inside float32's range, within sane bounds; values of the right type."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest

from optics.errors import ConfigError
from optics.limits import FLOAT32_MAX, FLOAT32_TINY, check_number, check_types

SOURCE, KEY = "system.toml", "mirrors[3].center_mm"


# ------------------------------------------------------------------------------- check_number


def test_float32_constants_are_float32s_own_limits():
    info = np.finfo(np.float32)
    assert FLOAT32_MAX == float(info.max) and FLOAT32_TINY == float(info.tiny)


@pytest.mark.parametrize("value", [0.0, -0.0, 1.0, -2.5, 7, FLOAT32_TINY, -FLOAT32_TINY, FLOAT32_MAX,
                                   -FLOAT32_MAX, np.float64(3.25), np.int64(-4)])
def test_finite_float32_numbers_come_back_as_floats(value):
    got = check_number(value, KEY, SOURCE)
    assert type(got) is float and got == float(value)
    assert np.isfinite(np.float32(got)) and (got == 0.0) == (np.float32(got) == 0.0)  # survives float32


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_naming_source_and_key(value):
    with pytest.raises(ConfigError) as info:
        check_number(value, KEY, SOURCE, low=-1.0, high=1.0)
    assert str(info.value) == f"{SOURCE}: key '{KEY}' must be finite, got {value}"


@pytest.mark.parametrize("value", [1e39, -1e39, FLOAT32_MAX * (1 + 1e-7), 1e308, FLOAT32_TINY / 2, -1e-39,
                                   1e-300, 5e-324])
def test_numbers_that_float32_turns_into_inf_or_a_subnormal_are_refused(value):
    with pytest.raises(ConfigError) as info:
        check_number(value, KEY, SOURCE)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: key '{KEY}' = ") and "outside float32's range" in message
    assert "\n" not in message


@pytest.mark.parametrize("low, high, value", [(1.0, 10.0, 1.0), (1.0, 10.0, 10.0), (1.0, None, 1e30),
                                              (None, 10.0, -1e30), (0.0, 0.0, 0.0)])
def test_bounds_are_inclusive(low, high, value):
    assert check_number(value, KEY, SOURCE, low=low, high=high) == value


@pytest.mark.parametrize("low, high, value, span", [
    (1.0, 10.0, 0.999, "1 … 10 mm"),
    (1.0, 10.0, 10.001, "1 … 10 mm"),
    (0.1, None, 0.05, "0.1 … inf mm"),
    (None, 1e6, 2e6, "-inf … 1e+06 mm"),
])
def test_values_outside_the_bounds_name_the_range_and_unit(low, high, value, span):
    with pytest.raises(ConfigError) as info:
        check_number(value, KEY, SOURCE, low=low, high=high, unit=" mm")
    expected = f"{SOURCE}: key '{KEY}' = {value:g} mm is not a physical value; expected {span}"
    assert str(info.value) == expected


def test_the_float32_check_comes_before_the_bounds():
    with pytest.raises(ConfigError, match="outside float32's range"):
        check_number(1e-300, KEY, SOURCE, low=1.0)


def test_an_integer_beyond_float_is_a_config_error():
    with pytest.raises(ConfigError, match=re.escape(KEY)):
        check_number(10**400, KEY, SOURCE)


# -------------------------------------------------------------------------------- check_types


@dataclasses.dataclass
class Settings:
    steps: int = 1
    lr: float = 0.1
    name: str = "a"
    quiet: bool = False
    options: dict = dataclasses.field(default_factory=dict)
    resolution: int | tuple[int, int, int] = 4
    sizes: list[int] = dataclasses.field(default_factory=list)
    limit: float | None = None


@pytest.mark.parametrize("key, value", [
    ("steps", 3), ("steps", -3), ("steps", 2**80),
    ("lr", 0.5), ("lr", 2), ("lr", 0), ("lr", FLOAT32_MAX),
    ("name", ""), ("name", "hashgrid"),
    ("quiet", True), ("quiet", False),
    ("options", {}), ("options", {"a": {"b": 1}}),
    ("resolution", 16), ("resolution", [4, 5, 6]), ("resolution", (4, 5, 6)),
])
def test_values_of_the_annotated_kind_pass(key, value):
    check_types(Settings, {key: value}, SOURCE)


@pytest.mark.parametrize("key, value, expected", [
    ("steps", True, "an integer"),
    ("steps", 3.0, "an integer"),
    ("steps", "3", "an integer"),
    ("lr", True, "a finite number"),
    ("lr", "0.1", "a finite number"),
    ("lr", math.nan, "a finite number"),
    ("lr", -math.inf, "a finite number"),
    ("name", 3, "a string"),
    ("quiet", 1, "true or false"),
    ("quiet", "yes", "true or false"),
    ("options", [1, 2], "a table"),
    ("resolution", True, "an integer or a list of 3 integers"),
    ("resolution", [4, 5], "an integer or a list of 3 integers"),
    ("resolution", [4, 5, True], "an integer or a list of 3 integers"),
    ("resolution", [4.0, 5, 6], "an integer or a list of 3 integers"),
    ("resolution", 4.0, "an integer or a list of 3 integers"),
])
def test_a_value_of_another_kind_is_refused_naming_source_key_and_kind(key, value, expected):
    with pytest.raises(ConfigError) as info:
        check_types(Settings, {key: value}, SOURCE, fix="; fix the file")
    assert str(info.value) == f"{SOURCE}: key '{key}' must be {expected}, got {value!r}; fix the file"


def test_bools_are_neither_integers_nor_numbers():
    for key in ("steps", "lr"):
        with pytest.raises(ConfigError, match=f"'{key}'"):
            check_types(Settings, {key: False}, SOURCE)


def test_a_float_beyond_float32_is_refused_by_check_number():
    with pytest.raises(ConfigError, match="key 'lr' = 1e\\+39 is outside float32's range"):
        check_types(Settings, {"lr": 1e39}, SOURCE)


def test_unknown_annotations_and_unknown_keys_are_left_alone():
    check_types(Settings, {"sizes": "not a list", "limit": "not a number", "nonsense": object()}, SOURCE)


def test_the_first_bad_key_in_order_is_named():
    with pytest.raises(ConfigError, match="'name'"):
        check_types(Settings, {"steps": 2, "name": 1, "quiet": 2}, SOURCE)


def test_a_long_value_is_shortened_in_the_message():
    with pytest.raises(ConfigError) as info:
        check_types(Settings, {"name": list(range(100))}, SOURCE)
    shown = str(info.value).split("got ", 1)[1]
    assert len(shown) == 60 and shown.endswith("...") and shown.startswith("[0, 1, 2")


def test_a_dataclass_with_evaluated_annotations_is_checked_too():
    plain = dataclasses.make_dataclass("Plain", [("steps", int, 1)])  # annotation: the class int
    with pytest.raises(ConfigError, match="'steps' must be an integer"):
        check_types(plain, {"steps": "three"}, SOURCE)


def test_an_integer_beyond_float_for_a_float_key_is_a_config_error():
    with pytest.raises(ConfigError, match="'lr'"):
        check_types(Settings, {"lr": 10**400}, SOURCE)
