"""Sessions of the admin web page (admin/ui.py): a login form takes an admin key or a bearer token, AdminAuth checks
it once, and the browser gets a session cookie instead of keeping the credential.

The cookie holds a random session id and its HMAC (a per-process key): HttpOnly, SameSite=Strict, Path=/ui, Secure
when the page is served over TLS. The session (principal, CSRF token, expiry) stays in this process's memory: the
credential itself is never stored, and a restarted or different replica asks to log in again. A session is only
accepted on /ui pages, so a browser's ambient cookie can never call the JSON API; every form carries the session's
CSRF token, checked in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from routeiq_gateway.admin.principals import Principal
from routeiq_gateway.http.asgi import Scope

COOKIE = "riq_session"
LOGIN_CSRF_COOKIE = "riq_login_csrf"
SESSION_SECONDS = 3600.0  # then log in again (an OIDC token's own expiry is not known here: keep this short)
MAX_SESSIONS = 10_000
SESSION_SCOPE = "routeiq.ui_session"  # the scope key a cookie-authenticated request's session is put under


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf: str
    expires: float


def cookie_value(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return v
    return None


def set_cookie(scope: Scope, name: str, value: str, max_age: int) -> tuple[bytes, bytes]:
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    attrs = f"{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    return b"set-cookie", attrs.encode("latin-1")


class Sessions:
    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def _sign(self, sid: str) -> str:
        mac = hmac.new(self._key, sid.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def open(self, principal: Principal) -> tuple[str, Session]:
        """A new session: the cookie value to set, and the session."""
        now = time.monotonic()
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
            while len(self._sessions) >= MAX_SESSIONS:  # still full: the oldest go first
                self._sessions.pop(next(iter(self._sessions)))
        sid = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), now + SESSION_SECONDS)
        self._sessions[sid] = session
        return f"{sid}.{self._sign(sid)}", session

    def get(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        sid, _, mac = cookie.partition(".")
        if not hmac.compare_digest(mac, self._sign(sid)):
            return None
        session = self._sessions.get(sid)
        if session is None or session.expires <= time.monotonic():
            self._sessions.pop(sid, None)
            return None
        return session

    def close(self, cookie: str | None) -> None:
        if cookie and self.get(cookie) is not None:
            self._sessions.pop(cookie.partition(".")[0], None)


class SessionAuthenticator:
    """AdminAuth's authenticator for the page's cookie: active while a session exists, only on /ui paths."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    @property
    def active(self) -> bool:
        return len(self.sessions) > 0

    async def __call__(self, scope: Scope) -> Principal | None:
        if not scope["path"].startswith("/ui"):
            return None
        session = self.sessions.get(cookie_value(scope, COOKIE))
        if session is None:
            return None
        scope[SESSION_SCOPE] = session
        return session.principal


def csrf_ok(expected: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())
