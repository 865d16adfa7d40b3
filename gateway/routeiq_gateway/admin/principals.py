"""Who calls the admin port, and with which role: one `authenticate(scope)` for every admin route.

Today one way in: `ADMIN_API_KEYS`, the break-glass keys, each an admin. Other authenticators (OIDC bearer
tokens) plug in beside it through `extra`: each returns a Principal for credentials it recognises, raises a 401
GatewayError for credentials it recognises as bad, and returns None for credentials that are not its kind."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from routeiq_gateway.admission.auth import auth_headers, presented_key
from routeiq_gateway.http.asgi import Scope
from routeiq_gateway.http.errors import GatewayError

_UNAUTHORIZED = "Missing or invalid admin credentials. Send 'Authorization: Bearer <admin key or token>'."


class Role(IntEnum):
    """Ordered: a role may do what every lower one may."""

    VIEWER = 1  # read: config, routers, teams, keys, spend
    EDITOR = 2  # write keys and teams
    ADMIN = 3  # everything: config reload too


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str  # who: a token's subject, or "break-glass:<n>" for the n-th admin key
    role: Role
    method: str  # how they proved it: "admin_api_key", "oidc", …


Authenticator = Callable[[Scope], Awaitable[Principal | None]]


class AdminAuth:
    def __init__(self, admin_keys: tuple[bytes, ...], extra: Sequence[Authenticator] = ()) -> None:
        self.admin_keys = admin_keys
        self.extra = tuple(extra)

    @property
    def closed(self) -> bool:
        return not self.admin_keys and not self.extra

    async def authenticate(self, scope: Scope) -> Principal:
        """The caller's principal; 403 while no way in is configured, 401 for missing or bad credentials."""
        if self.closed:
            raise GatewayError(403, "The admin API is closed: set ADMIN_API_KEYS to open it.", code="admin_closed")
        key = presented_key(*auth_headers(scope))
        if key is not None:
            matched = -1
            for i, candidate in enumerate(self.admin_keys):  # every key compared: timing reveals nothing
                if hmac.compare_digest(key, candidate):
                    matched = i
            if matched >= 0:
                return Principal(f"break-glass:{matched}", Role.ADMIN, "admin_api_key")
        for authenticator in self.extra:
            principal = await authenticator(scope)
            if principal is not None:
                return principal
        raise GatewayError(401, _UNAUTHORIZED, code="invalid_api_key")


def require(principal: Principal, role: Role) -> None:
    if principal.role < role:
        raise GatewayError(
            403,
            f"This needs the {role.name.lower()} role; you have {principal.role.name.lower()}.",
            code="insufficient_role",
        )
