"""The admin port's auth matrix: every route by {no credentials, bad key, viewer, editor, admin, break-glass key}
→ 401 / 403 / served; and again with real OIDC tokens (the verifier reading the issuer's keys from a JWKS file):
viewer/editor/admin by their group claim, expired, wrong audience, wrong issuer, bad signature, `alg: none`, HS256
keyed with the public key. Handlers are replaced by one that answers 204, so what is tested is who gets through."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from routeiq_gateway.admin.app import AdminApp
from routeiq_gateway.admin.audit_endpoints import AuditEndpoints
from routeiq_gateway.admin.endpoints import AdminEndpoints
from routeiq_gateway.admin.oidc import OidcAuthenticator
from routeiq_gateway.admin.principals import AdminAuth, Principal, at_least
from routeiq_gateway.admin.tenancy_endpoints import TenancyEndpoints
from routeiq_gateway.admin.ui import AdminUI
from routeiq_gateway.admin.ui_session import Sessions
from routeiq_gateway.admission.auth import auth_headers, presented_key
from routeiq_gateway.http.asgi import Scope
from routeiq_gateway.http.errors import GatewayError
from routeiq_shared.config_schema import AdminRole, OidcSettings

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


# --- the same matrix with real OIDC tokens: the issuer's keys from a JWKS file, every bad token of the issue ----

ISSUER = "https://issuer.example"
AUDIENCE = "routeiq-admin"


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> tuple[AdminApp, dict[str, bytes]]:
    """The admin app with the real OIDC authenticator, and a token for each case of the matrix."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = orjson.loads(jwt.get_algorithm_by_name("RS256").to_jwk(key.public_key()))
    jwks = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [{**public, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    settings = OidcSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=str(jwks),
        role_claim="groups",
        role_map={"ops-viewers": "viewer", "ops-editors": "editor", "ops-admins": "admin"},
    )
    now = int(time.time())

    def claims(group: str, **over: Any) -> dict[str, Any]:
        return {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, "groups": [group], **over}

    def signed(body: dict[str, Any], signer: Any = key, alg: str = "RS256") -> bytes:
        return jwt.encode(body, signer, algorithm=alg, headers={"kid": "k1"}).encode()

    unsigned = b".".join(
        base64.urlsafe_b64encode(orjson.dumps(part)).rstrip(b"=")
        for part in ({"alg": "none", "typ": "JWT", "kid": "k1"}, claims("ops-admins"))
    )
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = base64.urlsafe_b64encode(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"})).rstrip(b"=")
    body = base64.urlsafe_b64encode(orjson.dumps(claims("ops-admins"))).rstrip(b"=")
    hs = hmac.new(pem, head + b"." + body, hashlib.sha256)  # the classic confusion: HS256 keyed with the public key
    hs256 = head + b"." + body + b"." + base64.urlsafe_b64encode(hs.digest()).rstrip(b"=")
    tokens = {
        "viewer": signed(claims("ops-viewers")),
        "editor": signed(claims("ops-editors")),
        "admin": signed(claims("ops-admins")),
        "expired": signed(claims("ops-admins", iat=now - 7200, exp=now - 3600)),
        "wrong audience": signed(claims("ops-admins", aud="someone-else")),
        "wrong issuer": signed(claims("ops-admins", iss="https://evil.example")),
        "bad signature": signed(claims("ops-admins"), signer=stranger),
        "alg none": unsigned + b".",
        "hs256 with the public key": hs256,
    }
    return app(extra=(OidcAuthenticator(lambda: settings),)), tokens


@pytest.mark.parametrize(("method", "path", "needs"), ROUTES)
def test_auth_matrix_with_oidc_tokens(
    method: str, path: str, needs: AdminRole, oidc: tuple[AdminApp, dict[str, bytes]]
) -> None:
    a, tokens = oidc
    unauthenticated = 303 if method == "GET" and path.startswith("/ui") else 401
    expected = {case: unauthenticated for case in tokens}
    expected |= {role: 204 if at_least(role, needs) else 403 for role in ("viewer", "editor", "admin")}  # type: ignore[arg-type]
    expected["break-glass"] = 204
    expected["none"] = unauthenticated
    creds = {**tokens, "break-glass": BREAK_GLASS}
    got = {case: call(a, method, path, creds.get(case))[0] for case in expected}
    assert got == expected
