"""Valid run tables and TIFFs that the fuzz tests mutate."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_one_line(err: Exception) -> None:
    assert "\n" not in str(err) and str(err), repr(err)
