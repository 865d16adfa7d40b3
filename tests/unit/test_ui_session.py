"""The admin page's sessions (admin/ui_session.py): a signed id only, tampering and expiry refused, accepted on /ui
paths only, cookies HttpOnly + SameSite=Strict (+ Secure over TLS)."""

from __future__ import annotations

import asyncio

import pytest
from routeiq_gateway.admin import ui_session
from routeiq_gateway.admin.principals import Principal
from routeiq_gateway.admin.ui_session import COOKIE, SessionAuthenticator, Sessions, csrf_ok, set_cookie

ALICE = Principal("alice", "editor", "oidc")


def scope(path: str, cookie: str | None) -> dict[str, object]:
    headers = [(b"cookie", f"other=1; {COOKIE}={cookie}".encode())] if cookie is not None else []
    return {"type": "http", "path": path, "headers": headers}


def test_a_signed_session_is_the_principal_on_ui_paths_only() -> None:
    sessions = Sessions()
    auth = SessionAuthenticator(sessions)
    assert not auth.active  # no session yet: adds no way in
    value, session = sessions.open(ALICE)
    assert auth.active
    assert asyncio.run(auth(scope("/ui", value))) == ALICE
    assert asyncio.run(auth(scope("/v1/admin/keys", value))) is None  # the JSON API never takes the cookie
    sid, _, mac = value.partition(".")
    other = "B" if sid[-1] == "A" else "A"
    for forged in (
        f"{sid}.{mac[:-2]}{'y' if mac.endswith('x') else 'x'}",
        f"{sid[:-1]}{other}.{mac}",
        sid,
        "",
        "garbage",
    ):
        assert asyncio.run(auth(scope("/ui", forged))) is None, forged
    assert asyncio.run(auth(scope("/ui", None))) is None
    assert csrf_ok(session.csrf, session.csrf) and not csrf_ok(session.csrf, None) and not csrf_ok(session.csrf, "x")
    sessions.close(value)
    assert asyncio.run(auth(scope("/ui", value))) is None


def test_sessions_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = Sessions()
    value, _ = sessions.open(ALICE)
    now = ui_session.time.monotonic()
    monkeypatch.setattr(ui_session.time, "monotonic", lambda: now + ui_session.SESSION_SECONDS + 1)
    assert sessions.get(value) is None and len(sessions) == 0


def test_cookie_attributes() -> None:
    name, plain = set_cookie({"scheme": "http"}, COOKIE, "v", 60)
    assert name == b"set-cookie"
    assert plain == b"riq_session=v; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=60"
    assert set_cookie({"scheme": "https"}, COOKIE, "v", 60)[1].endswith(b"; Secure")
