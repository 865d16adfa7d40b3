"""The admin port's auth matrix: every route by {no credentials, bad key, viewer, editor, admin, break-glass key}
→ 401 / 403 / served. Handlers are replaced by one that answers 204, so what is tested is who gets through."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from routeiq_gateway.admin.app import AdminApp
from routeiq_gateway.admin.audit_endpoints import AuditEndpoints
from routeiq_gateway.admin.endpoints import AdminEndpoints
from routeiq_gateway.admin.principals import AdminAuth, Principal, at_least
from routeiq_gateway.admin.tenancy_endpoints import TenancyEndpoints
from routeiq_gateway.admin.ui import AdminUI
from routeiq_gateway.admin.ui_session import Sessions
from routeiq_gateway.admission.auth import auth_headers, presented_key
from routeiq_gateway.http.asgi import Scope
from routeiq_gateway.http.errors import GatewayError
from routeiq_shared.config_schema import AdminRole

BREAK_GLASS = b"sk-break-glass"
TOKENS: dict[bytes, AdminRole] = {b"viewer-token": "viewer", b"editor-token": "editor", b"admin-token": "admin"}

# The least role each route needs: written out here, not read from the app.
ROUTES: list[tuple[str, str, AdminRole]] = [
    ("POST", "/admin/reload", "admin"),
    ("GET", "/admin/config", "viewer"),
    ("GET", "/admin/routers", "viewer"),
    ("GET", "/v1/admin/teams", "viewer"),
    ("POST", "/v1/admin/teams", "editor"),
    ("GET", "/v1/admin/teams/t1", "viewer"),
    ("PATCH", "/v1/admin/teams/t1", "editor"),
    ("DELETE", "/v1/admin/teams/t1", "editor"),
    ("GET", "/v1/admin/keys", "viewer"),
    ("POST", "/v1/admin/keys", "editor"),
    ("GET", "/v1/admin/keys/k1", "viewer"),
    ("PATCH", "/v1/admin/keys/k1", "editor"),
    ("DELETE", "/v1/admin/keys/k1", "editor"),
    ("GET", "/v1/admin/spend", "viewer"),
    ("GET", "/v1/admin/audit", "viewer"),
    ("POST", "/key/generate", "editor"),
    ("GET", "/key/info", "viewer"),
    ("POST", "/key/update", "editor"),
    ("POST", "/key/delete", "editor"),
    ("POST", "/team/new", "editor"),
    ("GET", "/team/info", "viewer"),
    # the admin page (its login form needs no credentials: not in the matrix)
    ("GET", "/ui", "viewer"),
    ("GET", "/ui/audit", "viewer"),
    ("POST", "/ui/logout", "viewer"),
    ("POST", "/ui/teams", "editor"),
    ("POST", "/ui/keys", "editor"),
    ("POST", "/ui/keys/revoke", "editor"),
    ("POST", "/ui/keys/limits", "editor"),
]


class TokenAuth:
    """Stands for OIDC: recognises its tokens, refuses an expired one, leaves other credentials alone."""

    active = True

    async def __call__(self, scope: Scope) -> Principal | None:
        key = presented_key(*auth_headers(scope))
        if key == b"expired-token":
            raise GatewayError(401, "token expired", code="invalid_token")
        role = TOKENS.get(key or b"")
        return Principal(key.decode(), role, "test") if key and role else None


async def served(scope: Scope, receive: Any, send: Any, *args: str) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


TOKEN_AUTH = TokenAuth()


def app(keys: tuple[bytes, ...] = (BREAK_GLASS,), extra: Any = (TOKEN_AUTH,)) -> AdminApp:
    auth = AdminAuth(keys, extra)
    ui = AdminUI(auth, Sessions(), TenancyEndpoints(None))
    a = AdminApp(auth, AdminEndpoints.__new__(AdminEndpoints), TenancyEndpoints(None), AuditEndpoints(None), ui)
    a.routes = {route: (role, served) for route, (role, _) in a.routes.items()}
    a.item_routes = {route: (role, served) for route, (role, _) in a.item_routes.items()}
    return a


def call(a: AdminApp, method: str, path: str, credential: bytes | None) -> tuple[int, dict[str, Any] | None]:
    headers = [(b"authorization", b"Bearer " + credential)] if credential is not None else []
    scope = {"type": "http", "method": method, "path": path, "headers": headers, "query_string": b""}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(a(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], orjson.loads(body) if body else None


@pytest.mark.parametrize(("method", "path", "needs"), ROUTES)
def test_auth_matrix(method: str, path: str, needs: AdminRole) -> None:
    a = app()
    unauthenticated = 303 if method == "GET" and path.startswith("/ui") else 401  # a browser: to the login form
    expected = {
        None: unauthenticated,
        b"sk-wrong": unauthenticated,
        b"expired-token": unauthenticated,
        b"viewer-token": 204 if at_least("viewer", needs) else 403,
        b"editor-token": 204 if at_least("editor", needs) else 403,
        b"admin-token": 204,
        BREAK_GLASS: 204,  # break-glass is admin
    }
    got = {cred: call(a, method, path, cred)[0] for cred in expected}
    assert got == expected


def test_every_route_is_in_the_matrix() -> None:
    a = app()
    listed = {(m, p) for m, p, _ in ROUTES}
    assert set(a.routes) <= listed
    assert {(m, kind) for m, kind in a.item_routes} == {
        (m, "team" if "/teams/" in p else "key") for m, p, _ in ROUTES if p.count("/") == 4
    }


def test_too_low_a_role_is_told_in_openai_shape() -> None:
    status, body = call(app(), "POST", "/admin/reload", b"editor-token")
    assert status == 403 and body is not None
    assert body["error"]["code"] == "insufficient_role" and "admin" in body["error"]["message"]


def test_closed_without_any_way_in() -> None:
    closed = app(keys=(), extra=())
    assert call(closed, "GET", "/admin/config", None)[0] == 403
    assert call(closed, "GET", "/admin/config", BREAK_GLASS)[0] == 403


def test_unknown_route_and_method() -> None:
    assert call(app(), "GET", "/v1/admin/nothing", BREAK_GLASS)[0] == 404
    assert call(app(), "PUT", "/v1/admin/keys/k1", BREAK_GLASS)[0] == 405
    assert call(app(), "GET", "/admin/reload", BREAK_GLASS)[0] == 405
