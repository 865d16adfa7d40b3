"""What an admin may set on a team or a key, checked field by field: a bad value is a 400 naming the field, and
nothing is written. Names are RouteIQ's; LiteLLM's names (`tpm_limit`, `max_budget`, `duration`, …) are mapped
here so `/key/generate` and `/v1/admin/keys` share one check."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from routeiq_gateway.http.errors import bad_request

# LiteLLM's request names → ours (its /key/generate, /key/update, /team/new bodies).
LITELLM_NAMES = {
    "key_alias": "alias",
    "team_alias": "alias",
    "rpm_limit": "rpm",
    "tpm_limit": "tpm",
    "max_parallel_requests": "max_parallel",
    "max_budget": "budget",
    "budget_duration": "budget_period",
    "blocked": "revoked",
}
_DURATION = re.compile(r"^(\d+)(s|m|h|d|w|mo)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

TEAM_FIELDS = ("id", "alias", "models", "rpm", "tpm", "max_parallel", "budget", "budget_period", "budget_reset_at")
KEY_FIELDS = (*TEAM_FIELDS[1:], "team_id", "expires_at", "duration", "metadata", "revoked")
# LiteLLM fields that change nothing here and are harmless to accept (the client sends its defaults).
_IGNORED = frozenset({"metadata", "spend", "user_id", "key", "team_member_permissions", "members_with_roles"})


def duration_seconds(text: str, param: str) -> int:
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise bad_request(f"{param} must be a duration like '30d', '12h', '15m', '1mo'.", param)
    return int(match.group(1)) * _SECONDS[match.group(2)]


def parse(body: dict[str, Any], allowed: tuple[str, ...], now: float | None = None) -> dict[str, Any]:
    """Column → value for every field the body sets (None clears a limit). Raises a 400 on the first bad field."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {}
    for raw_name, value in body.items():
        name = LITELLM_NAMES.get(raw_name, raw_name)
        if name not in allowed:
            if raw_name in _IGNORED:
                continue
            raise bad_request(f"Unknown field '{raw_name}'.", raw_name)
        out.update(_one(name, raw_name, value, now))
    return out


def _one(name: str, param: str, value: Any, now: float) -> dict[str, Any]:
    if name in ("rpm", "tpm", "max_parallel"):
        if value is None:
            return {name: None}
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad_request(f"{param} must be a whole number ≥ 0, or null for no limit.", param)
        if value > 2**31 - 1:
            raise bad_request(f"{param} is too large.", param)
        return {name: value}
    if name == "budget":
        if value is None:
            return {name: None}
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value:
            raise bad_request(f"{param} must be a number ≥ 0, or null for no budget.", param)
        return {name: float(value)}
    if name == "budget_period":
        if value is None:
            return {name: None}
        seconds = duration_seconds(value, param)
        return {name: value.strip(), "budget_reset_at": datetime.fromtimestamp(now + seconds, UTC)}
    if name in ("budget_reset_at", "expires_at"):
        if value is None:
            return {name: None}
        at = _timestamp(value, param)
        if at.timestamp() <= now:
            raise bad_request(f"{param} is in the past.", param)
        return {name: at}
    if name == "duration":  # LiteLLM: the key expires this long from now
        if value is None:
            return {"expires_at": None}
        return {"expires_at": datetime.fromtimestamp(now + duration_seconds(value, param), UTC)}
    if name == "models":
        if not isinstance(value, list) or not all(isinstance(m, str) and m for m in value):
            raise bad_request(f"{param} must be a list of model names.", param)
        return {name: sorted(set(value))}
    if name in ("id", "team_id"):
        if name == "team_id" and value is None:
            return {name: None}
        if not isinstance(value, str) or not _ID.match(value):
            raise bad_request(f"{param} must be 1-128 letters, digits, '.', '_', ':' or '-'.", param)
        return {name: value}
    if name == "alias":
        if value is not None and (not isinstance(value, str) or len(value) > 256):
            raise bad_request(f"{param} must be a string of at most 256 characters.", param)
        return {name: value}
    if name == "revoked":
        if not isinstance(value, bool):
            raise bad_request(f"{param} must be true or false.", param)
        return {name: value}
    if name == "metadata":
        if not isinstance(value, dict):
            raise bad_request(f"{param} must be an object.", param)
        return {name: value}
    raise bad_request(f"Unknown field '{param}'.", param)


def _timestamp(value: Any, param: str) -> datetime:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise bad_request(f"{param} must be an ISO 8601 time (e.g. 2030-01-01T00:00:00Z) or epoch seconds.", param)
