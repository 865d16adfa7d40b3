"""Admin input for teams and keys: each bad value is a 400 naming the field; LiteLLM's names map to ours."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.tenancy.fields import KEY_FIELDS, TEAM_FIELDS, parse

NOW = datetime(2030, 1, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"rpm_limit": -1}, "rpm_limit"),
        ({"tpm": "1000"}, "tpm"),
        ({"max_parallel_requests": True}, "max_parallel_requests"),
        ({"rpm": 1.5}, "rpm"),
        ({"max_budget": -0.01}, "max_budget"),
        ({"budget": "ten"}, "budget"),
        ({"budget": float("nan")}, "budget"),
        ({"budget_duration": "monthly"}, "budget_duration"),
        ({"budget_reset_at": "2029-12-31T23:59:59Z"}, "budget_reset_at"),
        ({"expires_at": "2020-01-01"}, "expires_at"),
        ({"expires_at": "next tuesday"}, "expires_at"),
        ({"duration": "0d"}, "duration"),
        ({"models": "gpt-4o"}, "models"),
        ({"team_id": "has spaces"}, "team_id"),
        ({"blocked": "yes"}, "blocked"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_values_are_refused_by_name(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as refused:
        parse(body, KEY_FIELDS, now=NOW)
    assert refused.value.status == 400 and refused.value.param == param


def test_litellm_names_map_to_ours() -> None:
    got = parse(
        {
            "key_alias": "ci",
            "rpm_limit": 60,
            "tpm_limit": 10_000,
            "max_parallel_requests": 4,
            "max_budget": 25,
            "budget_duration": "30d",
            "duration": "7d",
            "models": ["b", "a", "a"],
            "blocked": False,
            "metadata": {"owner": "x"},
        },
        KEY_FIELDS,
        now=NOW,
    )
    assert got["alias"] == "ci" and got["rpm"] == 60 and got["tpm"] == 10_000 and got["max_parallel"] == 4
    assert got["budget"] == 25.0 and got["budget_period"] == "30d" and got["models"] == ["a", "b"]
    assert got["budget_reset_at"].timestamp() == NOW + 30 * 86400
    assert got["expires_at"].timestamp() == NOW + 7 * 86400
    assert got["revoked"] is False


def test_null_clears_a_limit_and_a_team_has_no_expiry() -> None:
    assert parse({"rpm": None, "max_budget": None}, TEAM_FIELDS, now=NOW) == {"rpm": None, "budget": None}
    with pytest.raises(GatewayError):
        parse({"expires_at": "2031-01-01T00:00:00Z"}, TEAM_FIELDS, now=NOW)


def test_database_settings_refuse_bad_urls_and_redact_passwords() -> None:
    from routeiq_gateway.tenancy.database import DatabaseSettings

    assert DatabaseSettings.from_env({}) is None
    for bad in ("mysql://h/db", "postgresql://169.254.169.254/db", "not a url"):
        with pytest.raises(ValueError) as refused:
            DatabaseSettings.from_env({"DATABASE_URL": bad})
        assert "DATABASE_URL" in str(refused.value)
    with pytest.raises(ValueError, match="DATABASE_READ_URL"):
        DatabaseSettings.from_env({"DATABASE_URL": "postgresql://h/db", "DATABASE_READ_URL": "http://h/"})
    with pytest.raises(ValueError, match="ROUTEIQ_DB_STATEMENT_TIMEOUT"):
        DatabaseSettings.from_env({"DATABASE_URL": "postgresql://h/db", "ROUTEIQ_DB_STATEMENT_TIMEOUT": "-1"})
    s = DatabaseSettings.from_env({"DATABASE_URL": "postgresql://u:s3cr3t-pw@h/db", "ROUTEIQ_DB_POOL_MAX": "8"})
    assert s is not None and s.pool_max == 8
    assert s.redact('failed for "postgresql://u:s3cr3t-pw@h/db"') == 'failed for "postgresql://u:***@h/db"'
