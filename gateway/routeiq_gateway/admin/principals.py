"""Who calls the admin port, and with which role: one `AdminAuth.authenticate(scope)` for every admin route.

Ways in: `ADMIN_API_KEYS`, the break-glass keys (each an admin, compared in constant time), and authenticators
plugged in through `extra` — OIDC bearer tokens (oidc.py's OidcAuthenticator). An authenticator returns a
Principal for credentials it recognises, raises a GatewayError (401 bad, 403 no role, 503 cannot check) for
credentials it recognises as its kind, and returns None for the others. While no way in is configured the admin
port answers 403. Roles rank as `ADMIN_ROLES` (viewer < editor < admin): a role may do what every lower one may.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from routeiq_shared.config_schema import ADMIN_ROLES, AdminRole

from routeiq_gateway.admission.auth import auth_headers, matches_any, presented_key
from routeiq_gateway.audit.record import Actor
from routeiq_gateway.http.asgi import Scope
from routeiq_gateway.http.errors import GatewayError

PRINCIPAL = "routeiq.principal"  # the scope key admin/app.py puts the caller's principal under
_UNAUTHORIZED = "Missing or invalid admin credentials. Send 'Authorization: Bearer <admin key or token>'."


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str  # a token's `sub`, or `admin_key:<sha256 prefix>` (which key, never the key)
    role: AdminRole
    how: str  # how they proved it: "admin_key", "oidc"; the audit record's actor.how


class Authenticator(Protocol):
    @property
    def active(self) -> bool:
        """Configured now (read at each call: a reload may add or remove it)."""
        ...

    async def __call__(self, scope: Scope) -> Principal | None: ...


def at_least(role: AdminRole, needed: AdminRole) -> bool:
    return ADMIN_ROLES.index(role) >= ADMIN_ROLES.index(needed)


def require(principal: Principal, role: AdminRole) -> None:
    if not at_least(principal.role, role):
        raise GatewayError(403, f"This needs the {role} role; you have {principal.role}.", code="insufficient_role")


class AdminAuth:
    def __init__(self, admin_keys: tuple[bytes, ...], extra: Sequence[Authenticator] = ()) -> None:
        self.admin_keys = admin_keys
        self.extra = tuple(extra)

    @property
    def closed(self) -> bool:
        return not self.admin_keys and not any(a.active for a in self.extra)

    async def authenticate(self, scope: Scope) -> Principal:
        """The caller's principal; 403 while no way in is configured, 401 for missing or bad credentials."""
        if self.closed:
            raise GatewayError(
                403,
                "The admin API is closed: set ADMIN_API_KEYS or routeiq.admin.oidc to open it.",
                code="admin_closed",
            )
        key = presented_key(*auth_headers(scope))
        if key is not None and matches_any(self.admin_keys, key):
            return Principal(f"admin_key:{hashlib.sha256(key).hexdigest()[:12]}", "admin", "admin_key")
        for authenticator in self.extra:
            if authenticator.active:
                principal = await authenticator(scope)
                if principal is not None:
                    return principal
        raise GatewayError(401, _UNAUTHORIZED, code="invalid_api_key")


def actor_of(scope: Scope) -> Actor:
    """The audit actor of an authenticated admin call (admin/app.py put its principal in the scope)."""
    principal: Principal = scope[PRINCIPAL]
    return Actor(principal.subject, principal.how)
