"""OIDC JWT bearer tokens for the admin API: signature by the issuer's keys (jwks.py), then iss, aud, exp, nbf,
and the caller's role from a configurable claim.

Only the configured asymmetric algorithms verify (never `none`, never HS*: an HS256 token "signed" with the JWKS's
public key is refused before any key is looked at). A token that is valid but maps to no role is refused with 403:
a signed-in user the role map does not name has no business on the admin API, and no role is assumed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
from routeiq_shared.config_schema import ADMIN_ROLES, AdminRole, OidcSettings

from routeiq_gateway.admin.jwks import JwksCache, JwksUnavailable
from routeiq_gateway.admin.principals import Principal
from routeiq_gateway.admission.auth import auth_headers, presented_key
from routeiq_gateway.http.asgi import Scope
from routeiq_gateway.http.errors import GatewayError

log = logging.getLogger("routeiq.gateway.admin")


class OidcVerifier:
    def __init__(self, settings: OidcSettings, jwks: JwksCache | None = None) -> None:
        self.settings = settings
        self.algorithms = tuple(settings.algorithms)
        self.jwks = jwks or JwksCache(
            settings.issuer,
            jwks_url=settings.jwks_url,
            jwks_file=Path(settings.jwks_file) if settings.jwks_file else None,
            cache_seconds=settings.jwks_cache_seconds,
            min_refresh=settings.jwks_min_refresh_seconds,
        )

    async def verify(self, token: str) -> tuple[str, AdminRole]:
        """(subject, role) of a valid token. 401 invalid, 403 valid but no role, 503 keys unavailable."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _invalid("the bearer token is not a JWT") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise _invalid(f"token algorithm {alg!r} is not accepted (accepted: {', '.join(self.algorithms)})")
        kid = header.get("kid")
        try:
            key = await self.jwks.key(kid if isinstance(kid, str) else None)
        except JwksUnavailable as exc:
            log.warning("OIDC token not checked: no keys", extra={"event": "oidc_unavailable", "reason": str(exc)})
            raise GatewayError(
                503, "The identity provider's signing keys are unavailable; try again shortly.", code="oidc_unavailable"
            ) from None
        if key is None:
            raise _invalid(f"token key id {kid!r} is not one of the issuer's signing keys")
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _invalid("token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise _invalid("token audience is not this gateway") from None
        except jwt.InvalidIssuerError:
            raise _invalid("token issuer is not the configured issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:  # bad signature, malformed, algorithm mismatch with the key
            raise _invalid(f"token is invalid: {type(exc).__name__}") from None
        subject = str(claims["sub"])
        role = highest_role(claim_values(claims, s.role_claim), s.role_map)
        if role is None:
            raise GatewayError(
                403, f"No admin role for this identity (claim {s.role_claim!r} maps to none).", code="no_role"
            )
        return subject, role


def claim_values(claims: dict[str, Any], path: str) -> list[str]:
    """The string values at a dotted claim path (`realm_access.roles`); a string is one value, a list many."""
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return []
        node = node[part]
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [v for v in node if isinstance(v, str)]
    return []


def highest_role(values: Iterable[str], role_map: Mapping[str, AdminRole]) -> AdminRole | None:
    ranks = [ADMIN_ROLES.index(role_map[v]) for v in values if v in role_map]
    return ADMIN_ROLES[max(ranks)] if ranks else None


def _invalid(message: str) -> GatewayError:
    return GatewayError(401, f"Invalid admin token: {message}.", code="invalid_token")


class OidcAuthenticator:
    """The AdminAuth authenticator for OIDC bearer tokens (principals.py): active while `routeiq.admin.oidc` is
    configured; a bearer credential shaped like a JWT (three dot-separated parts) is its kind, anything else is
    left to the others."""

    def __init__(self, settings: Callable[[], OidcSettings | None]) -> None:
        self._settings = settings  # read at each call: a reload may add, change or remove it
        self._verifier: OidcVerifier | None = None

    @property
    def active(self) -> bool:
        return self._settings() is not None

    async def __call__(self, scope: Scope) -> Principal | None:
        authorization, _ = auth_headers(scope)
        token = presented_key(authorization, None)
        verifier = self._verifier_for(self._settings())
        if verifier is None or token is None or token.count(b".") != 2:
            return None
        subject, role = await verifier.verify(token.decode("ascii", "replace"))
        return Principal(subject, role, "oidc")

    def _verifier_for(self, settings: OidcSettings | None) -> OidcVerifier | None:
        if settings is None:
            self._verifier = None
        elif self._verifier is None or self._verifier.settings != settings:  # keys are kept while config is unchanged
            self._verifier = OidcVerifier(settings)
        return self._verifier
