"""Who is calling the admin API, and with which role: the one entry point every admin route uses.

    principal = await identity.authenticate(scope["headers"])   # 401 / 403 / 503 as GatewayError
    require(principal, "admin")                                 # 403 when the role is too low

Two sources. ADMIN_API_KEYS, the break-glass keys (role admin), compared in constant time (admission/auth.py);
and, when `routeiq.admin.oidc` is configured, OIDC JWT bearer tokens (oidc.py), their role mapped from a claim.
Roles rank viewer < editor < admin. With neither source configured the admin API is closed (403).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from routeiq_shared.config_schema import ADMIN_ROLES, AdminRole, OidcSettings

from routeiq_gateway.admin.oidc import OidcVerifier
from routeiq_gateway.admission import auth
from routeiq_gateway.http.errors import GatewayError

Role = AdminRole
How = Literal["admin_key", "oidc"]


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str  # the token's `sub`, or `admin_key:<sha256 prefix>` (which key, never the key)
    role: Role
    how: How


def require(principal: Principal, role: Role) -> None:
    if ADMIN_ROLES.index(principal.role) < ADMIN_ROLES.index(role):
        raise GatewayError(403, f"This action needs the {role} role; you have {principal.role}.", code="forbidden")


class AdminIdentity:
    def __init__(self, admin_keys: tuple[bytes, ...], oidc: Callable[[], OidcSettings | None]) -> None:
        self.admin_keys = admin_keys
        self._oidc_settings = oidc  # read at each call: a reload may add, change or remove it
        self._verifier: OidcVerifier | None = None

    async def authenticate(self, headers: Iterable[tuple[bytes, bytes]]) -> Principal:
        authorization, x_api_key = auth.credential_headers(headers)
        key = auth.presented_key(authorization, x_api_key)
        verifier = self._verifier_for(self._oidc_settings())
        if not self.admin_keys and verifier is None:
            raise GatewayError(
                403,
                "The admin API is closed: set ADMIN_API_KEYS or routeiq.admin.oidc to open it.",
                code="admin_closed",
            )
        if key is None:
            raise GatewayError(
                401, "Missing admin credentials. Send 'Authorization: Bearer <key or token>'.", code="invalid_api_key"
            )
        matched = auth.matches_any(self.admin_keys, key)
        if matched:
            return Principal(f"admin_key:{hashlib.sha256(key).hexdigest()[:12]}", "admin", "admin_key")
        # A JWT is three dot-separated parts and comes as a bearer token; anything else is a wrong key.
        if verifier is not None and authorization is not None and key.count(b".") == 2:
            subject, role = await verifier.verify(key.decode("ascii", "replace"))
            return Principal(subject, role, "oidc")
        raise GatewayError(401, "Missing or invalid admin credentials.", code="invalid_api_key")

    def _verifier_for(self, settings: OidcSettings | None) -> OidcVerifier | None:
        if settings is None:
            self._verifier = None
        elif self._verifier is None or self._verifier.settings != settings:  # keys are kept while config is unchanged
            self._verifier = OidcVerifier(settings)
        return self._verifier
