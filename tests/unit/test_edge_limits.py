"""The edge's limits come from the environment with documented defaults; a bad value names its variable."""

from __future__ import annotations

import pytest
from routeiq_gateway.http.limits import EdgeLimits


def test_defaults_without_environment() -> None:
    assert EdgeLimits.from_env({}) == EdgeLimits()


def test_environment_overrides() -> None:
    limits = EdgeLimits.from_env({"ROUTEIQ_BODY_TIMEOUT_SECONDS": "2.5", "ROUTEIQ_MAX_CONNECTIONS": "10"})
    assert (limits.body_timeout, limits.max_connections) == (2.5, 10)


@pytest.mark.parametrize(("name", "raw"), [("ROUTEIQ_MAX_HEADERS", "many"), ("ROUTEIQ_KEEP_ALIVE_SECONDS", "-1")])
def test_bad_values_name_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ValueError, match=name):
        EdgeLimits.from_env({name: raw})
