"""Fixtures shared by the tests in this folder."""

import pytest

from recon.model.fields.config import FIELD_KINDS


@pytest.fixture(params=FIELD_KINDS)
def kind(request):
    return request.param
