"""Admin identity (admin/principals.py's AdminAuth with oidc.py's OidcAuthenticator) against a real fake OIDC
issuer process over loopback: discovery + JWKS, keys generated with `cryptography`, tokens signed with PyJWT.
Every bad token of issue 11's list is refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness.oidc_issuer_control import AUDIENCE, FakeIssuer
from harness.processes import wait_until
from routeiq_gateway.admin.oidc import OidcAuthenticator
from routeiq_gateway.admin.principals import AdminAuth, Principal, require
from routeiq_gateway.http.errors import GatewayError
from routeiq_shared.config_schema import OidcSettings

ROLE_MAP = {"rq-viewers": "viewer", "rq-editors": "editor", "rq-admins": "admin"}
BREAK_GLASS = b"break-glass-key-0123456789"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeIssuer]:
    """One issuer for the tests that only read it (a process start and two key pairs each would be most of
    their time)."""
    fake = FakeIssuer(tmp_path_factory.mktemp("issuer")).start()
    yield fake
    fake.stop()


@pytest.fixture
def own_issuer(tmp_path: Path) -> Iterator[FakeIssuer]:
    """An issuer of the test's own, for tests that rotate keys or stop it."""
    fake = FakeIssuer(tmp_path / "issuer").start()
    yield fake
    fake.stop()


def settings(issuer: FakeIssuer, **overrides: Any) -> OidcSettings:
    values: dict[str, Any] = {"issuer": issuer.url, "audience": AUDIENCE, "role_map": ROLE_MAP, **overrides}
    return OidcSettings(**values)


def identity(oidc: OidcSettings | None, keys: tuple[bytes, ...] = (BREAK_GLASS,)) -> AdminAuth:
    return AdminAuth(keys, [OidcAuthenticator(lambda: oidc)])


def bearer(token: str | bytes) -> list[tuple[bytes, bytes]]:
    raw = token.encode() if isinstance(token, str) else token
    return [(b"authorization", b"Bearer " + raw)]


def authenticate(ident: AdminAuth, headers: list[tuple[bytes, bytes]]) -> Principal:
    return asyncio.run(ident.authenticate({"type": "http", "headers": headers}))


def refused(ident: AdminAuth, headers: list[tuple[bytes, bytes]]) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        authenticate(ident, headers)
    return info.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_each_role_from_the_claim_and_the_highest_wins(issuer: FakeIssuer) -> None:
    ident = identity(settings(issuer))
    rsa_kid, ec_kid = list(issuer.private)
    for group, role in ROLE_MAP.items():
        for kid in (rsa_kid, ec_kid):
            got = authenticate(ident, bearer(issuer.token(issuer.claims([group]), kid)))
            assert got == Principal("alice", role, "oidc")  # type: ignore[arg-type]
    both = authenticate(ident, bearer(issuer.token(issuer.claims(["rq-viewers", "other", "rq-admins"]))))
    assert both.role == "admin"


def test_dotted_role_claim_path(issuer: FakeIssuer) -> None:
    ident = identity(settings(issuer, role_claim="realm_access.roles"))
    token = issuer.token(issuer.claims(realm_access={"roles": ["rq-editors"]}))
    assert authenticate(ident, bearer(token)).role == "editor"


def test_require_refuses_a_lower_role(issuer: FakeIssuer) -> None:
    viewer = authenticate(identity(settings(issuer)), bearer(issuer.token(issuer.claims(["rq-viewers"]))))
    require(viewer, "viewer")
    with pytest.raises(GatewayError) as info:
        require(viewer, "admin")
    assert (info.value.status, info.value.code) == (403, "insufficient_role")


def test_no_role_is_403_not_a_default_role(issuer: FakeIssuer) -> None:
    ident = identity(settings(issuer))
    for claims in (issuer.claims(), issuer.claims(["unmapped-group"])):
        err = refused(ident, bearer(issuer.token(claims)))
        assert (err.status, err.code) == (403, "no_role")


def test_break_glass_key_and_missing_or_wrong_credentials(issuer: FakeIssuer) -> None:
    ident = identity(settings(issuer))
    got = authenticate(ident, [(b"x-api-key", BREAK_GLASS)])
    assert (got.role, got.how) == ("admin", "admin_key")
    assert got.subject == "admin_key:" + hashlib.sha256(BREAK_GLASS).hexdigest()[:12]
    assert BREAK_GLASS.decode() not in got.subject
    assert refused(ident, []).status == 401
    assert refused(ident, bearer("not-the-key")).status == 401
    closed = refused(identity(None, keys=()), bearer(BREAK_GLASS))
    assert (closed.status, closed.code) == (403, "admin_closed")
    # Keys alone, no OIDC: a JWT-shaped token is just a wrong key
    assert refused(identity(None), bearer(issuer.token(issuer.claims(["rq-admins"])))).status == 401


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"exp": -120}, "expired"),
        ({"nbf": 120}, "not valid yet"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"sub": None}, "'sub'"),
    ],
)
def test_bad_claims_are_401(issuer: FakeIssuer, claims: dict[str, Any], why: str) -> None:
    ident = identity(settings(issuer))
    now = issuer.claims()["iat"]
    shifted = {k: (now + v if k in ("exp", "nbf") else v) for k, v in claims.items()}
    err = refused(ident, bearer(issuer.token(issuer.claims(["rq-admins"], **shifted))))
    assert (err.status, err.code) == (401, "invalid_token")
    assert why in err.message


def test_leeway_accepts_small_clock_skew(issuer: FakeIssuer) -> None:
    ident = identity(settings(issuer, leeway_seconds=30))
    now = issuer.claims()["iat"]
    token = issuer.token(issuer.claims(["rq-admins"], exp=now - 5, nbf=now + 5))
    assert authenticate(ident, bearer(token)).role == "admin"


def test_alg_none_is_refused(issuer: FakeIssuer) -> None:
    ident = identity(settings(issuer))
    kid = next(iter(issuer.private))
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    token = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(issuer.claims(['rq-admins'])))}."
    err = refused(ident, bearer(token))
    assert err.status == 401 and "'none'" in err.message


def test_hs256_signed_with_the_public_key_is_refused(issuer: FakeIssuer) -> None:
    ident = identity(settings(issuer))
    kid = next(iter(issuer.private))
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(issuer.claims(['rq-admins'])))}"
    for secret in (orjson.dumps(issuer.public_jwk(kid)), issuer.public_jwk(kid)["n"].encode()):
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        err = refused(ident, bearer(f"{signing_input}.{b64(sig)}"))
        assert err.status == 401 and "'HS256'" in err.message
    # Even configured by mistake it could not be: the schema has no HS* algorithm
    with pytest.raises(ValueError):
        settings(issuer, algorithms=["HS256"])


def test_tampered_payload_is_refused(issuer: FakeIssuer) -> None:
    ident = identity(settings(issuer))
    header, _, sig = issuer.token(issuer.claims(["rq-viewers"])).split(".")
    forged = b64(orjson.dumps(issuer.claims(["rq-admins"])))
    err = refused(ident, bearer(f"{header}.{forged}.{sig}"))
    assert (err.status, err.code) == (401, "invalid_token")


def test_unknown_kid_is_refused_rate_limited_then_rotation_is_picked_up(own_issuer: FakeIssuer) -> None:
    ident = identity(settings(own_issuer, jwks_min_refresh_seconds=1.0))
    assert authenticate(ident, bearer(own_issuer.token(own_issuer.claims(["rq-admins"])))).role == "admin"
    fetched = own_issuer.jwks_fetches()
    new_kid = own_issuer.add_key("RS256", publish=False)
    token = own_issuer.token(own_issuer.claims(["rq-editors"]), new_kid)
    for _ in range(20):  # a flood of unknown kids: at most one refetch per interval
        err = refused(ident, bearer(token))
        assert err.status == 401 and "key id" in err.message
    assert own_issuer.jwks_fetches() - fetched <= 1
    own_issuer.publish(new_kid)  # rotation: the issuer now publishes the new key

    def accepted() -> bool:
        try:
            return authenticate(ident, bearer(token)).role == "editor"
        except GatewayError:
            return False

    wait_until(accepted, timeout=5, interval=0.1)


def test_issuer_down_cached_keys_keep_working_unknown_kids_and_cold_caches_fail_clearly(own_issuer: FakeIssuer) -> None:
    ident = identity(settings(own_issuer, jwks_min_refresh_seconds=0))
    token = own_issuer.token(own_issuer.claims(["rq-admins"]))
    assert authenticate(ident, bearer(token)).role == "admin"
    own_issuer.stop()
    assert authenticate(ident, bearer(token)).role == "admin"  # cached keys keep working
    unknown = own_issuer.token(own_issuer.claims(["rq-admins"]), own_issuer.add_key("ES256", publish=False))
    assert refused(ident, bearer(unknown)).status == 401
    cold = refused(identity(settings(own_issuer)), bearer(token))  # never fetched: nothing to check against
    assert (cold.status, cold.code) == (503, "oidc_unavailable")
    assert "unavailable" in cold.message


def test_jwks_from_a_file(own_issuer: FakeIssuer, tmp_path: Path) -> None:
    own_issuer.stop()  # the file alone is enough
    ident = identity(settings(own_issuer, jwks_file=str(own_issuer.jwks_path)))
    assert authenticate(ident, bearer(own_issuer.token(own_issuer.claims(["rq-editors"])))).role == "editor"


def test_garbage_in_jwt_shape_is_401(issuer: FakeIssuer) -> None:
    ident = identity(settings(issuer))
    for token in ("a.b.c", "eyJhbGciOiJSUzI1NiJ9.@@@.###", "...."):
        err = refused(ident, bearer(token))
        assert err.status == 401, token


def test_a_jwks_of_shared_secrets_gives_no_key(issuer: FakeIssuer, tmp_path: Path) -> None:
    kid = next(iter(issuer.private))
    jwks = tmp_path / "oct.json"
    jwks.write_bytes(orjson.dumps({"keys": [{"kty": "oct", "kid": kid, "k": b64(b"s" * 32)}]}))
    err = refused(identity(settings(issuer, jwks_file=str(jwks))), bearer(issuer.token(issuer.claims(["rq-admins"]))))
    assert (err.status, err.code) == (503, "oidc_unavailable")
