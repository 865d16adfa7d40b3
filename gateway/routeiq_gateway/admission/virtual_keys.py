"""Who may call /v1/* when virtual keys are on (DATABASE_URL): the master key (constant-time), or a virtual key
from the cache (tenancy/key_cache.py) that is neither revoked nor expired; then, per request, whether the key and
its team may use the model asked for.

Answers follow LiteLLM's proxy: 401 for a missing, unknown, revoked or expired key; 403 with
`key_model_access_denied` / `team_model_access_denied` for a model the key or its team may not use."""

from __future__ import annotations

import hmac
import time

from routeiq_gateway.admission.auth import presented_key
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.tenancy.key_cache import KeyCache
from routeiq_gateway.tenancy.records import VirtualKey, key_hash

_MISSING = "Missing or invalid API key. Send 'Authorization: Bearer <key>'."


class KeyAdmission:
    def __init__(self, cache: KeyCache) -> None:
        self.cache = cache

    async def admit(
        self, master_key: bytes | None, authorization: bytes | None, x_api_key: bytes | None
    ) -> tuple[bytes | None, VirtualKey | None]:
        """(the presented key, its VirtualKey — None for the master key); raises 401 or 503."""
        key = presented_key(authorization, x_api_key)
        if key is None:
            raise GatewayError(401, _MISSING, code="invalid_api_key")
        if master_key is not None and hmac.compare_digest(key, master_key):
            return key, None
        # A dict lookup by sha256: what timing could reveal is where a hash of the guess lands, not the key.
        digest = key_hash(key)
        vkey = self.cache.cached(digest)
        if vkey is None:
            vkey = await self.cache.resolve(digest)
        if vkey is None:
            raise GatewayError(401, _MISSING, code="invalid_api_key")
        if vkey.revoked:
            raise GatewayError(401, "This API key has been revoked.", code="invalid_api_key")
        if vkey.expired(time.time()):
            raise GatewayError(401, "This API key has expired.", code="invalid_api_key")
        return key, vkey


def may_use(vkey: VirtualKey, model: str) -> bool:
    """Whether the key's models (when set) and its team's (when set) include `model` (or "*")."""
    for allowed in (vkey.models, vkey.team.models if vkey.team is not None else frozenset()):
        if allowed and model not in allowed and "*" not in allowed:
            return False
    return True


def check_model(vkey: VirtualKey, model: str) -> None:
    """403 unless the key's models (when set) and its team's (when set) include `model` (or "*")."""
    if vkey.models and model not in vkey.models and "*" not in vkey.models:
        raise GatewayError(
            403,
            f"API key not allowed to access model. This key can only access models={sorted(vkey.models)}. "
            f"Tried to access {model}.",
            code="key_model_access_denied",
            param="model",
        )
    team = vkey.team
    if team is not None and team.models and model not in team.models and "*" not in team.models:
        raise GatewayError(
            403,
            f"Team not allowed to access model. Team={team.id}, Model={model}. Allowed team models = "
            f"{sorted(team.models)}.",
            code="team_model_access_denied",
            param="model",
        )
