"""The admin web page on the admin port: server-rendered HTML, no build step, no script.

    GET  /ui/login, POST /ui/login     the login form: an admin key or a bearer token → a session (ui_session.py)
    GET  /ui                           teams, keys, spend per team and model; forms to create and change (viewer)
    GET  /ui/audit?actor=&action=&target=   the audit log, searched (viewer)
    POST /ui/teams, /ui/keys, /ui/keys/revoke, /ui/keys/limits   (editor)   POST /ui/logout

Every change goes through TenancyEndpoints' own operations, so it is checked and audited exactly as on the API.
Forms post back and are answered with a redirect (303) or the page with what went wrong; a new key's secret is
shown once, on the answer to its creation. Every value on a page is HTML-escaped."""

from __future__ import annotations

import html
import secrets
from typing import Any
from urllib.parse import parse_qs

from routeiq_gateway.admin.principals import AdminAuth, Principal
from routeiq_gateway.admin.tenancy_endpoints import TenancyEndpoints, db_call, key_out, team_out
from routeiq_gateway.admin.ui_session import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    SESSION_SCOPE,
    SESSION_SECONDS,
    Session,
    Sessions,
    cookie_value,
    csrf_ok,
    set_cookie,
)
from routeiq_gateway.audit.table import AuditQuery, search
from routeiq_gateway.http.asgi import Receive, Scope, Send, read_body, send_response
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.tenancy import store

HTML = b"text/html; charset=utf-8"
MAX_FORM = 64 * 1024
_NUMBERS = ("rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget")
_SECURITY_HEADERS = (
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
)
_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:.3em .6em}form.inline{display:inline}.secret{background:#ffd;padding:1em}"
    ".error{color:#b00}"
)

e = html.escape


class AdminUI:
    def __init__(self, auth: AdminAuth, sessions: Sessions, tenancy: TenancyEndpoints) -> None:
        self.auth = auth
        self.sessions = sessions
        self.tenancy = tenancy

    # --- login -------------------------------------------------------------------------------------------------

    async def login_form(self, scope: Scope, receive: Receive, send: Send, error: str = "") -> None:
        token = secrets.token_urlsafe(24)  # double-submit: the form's field must equal the cookie
        body = (
            "<h1>RouteIQ admin</h1>"
            + (f'<p class="error">{e(error)}</p>' if error else "")
            + '<form method="post" action="/ui/login">'
            + f'<input type="hidden" name="csrf" value="{token}">'
            + '<label>Admin key or bearer token <input type="password" name="credential" id="credential"></label> '
            + '<button type="submit" id="login">Log in</button></form>'
        )
        await _page(send, 401 if error else 200, "Log in", body, [set_cookie(scope, LOGIN_CSRF_COOKIE, token, 600)])

    async def login(self, scope: Scope, receive: Receive, send: Send) -> None:
        form = await _form(receive)
        if not csrf_ok(cookie_value(scope, LOGIN_CSRF_COOKIE) or "", form.get("csrf")):
            await self.login_form(scope, receive, send, "The form expired; try again.")
            return
        credential = form.get("credential", "").strip()
        probe = {**scope, "path": "/ui/login", "headers": [(b"authorization", b"Bearer " + credential.encode())]}
        try:
            principal = await self.auth.authenticate(probe)
        except GatewayError as exc:
            await self.login_form(scope, receive, send, exc.message)
            return
        value, _ = self.sessions.open(principal)
        await _redirect(send, "/ui", [set_cookie(scope, COOKIE, value, int(SESSION_SECONDS))])

    async def logout(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._checked_form(scope, receive)
        self.sessions.close(cookie_value(scope, COOKIE))
        await _redirect(send, "/ui/login", [set_cookie(scope, COOKIE, "", 0)])

    # --- pages -------------------------------------------------------------------------------------------------

    async def home(self, scope: Scope, receive: Receive, send: Send, notice: str = "", status: int = 200) -> None:
        csrf = self._csrf(scope)
        t = self.tenancy.live()
        teams = [team_out(r) for r in await db_call(store.list_teams(t.db))]
        keys = [key_out(r) for r in await db_call(store.list_keys(t.db))]
        spend = await db_call(store.spend_report(t.db, None, None, None))
        team_rows = "".join(
            f"<tr><td>{e(x['team_id'])}</td><td>{e(x['team_alias'] or '')}</td><td>{e(', '.join(x['models']))}</td>"
            f"<td>{_n(x['rpm_limit'])}</td><td>{_n(x['tpm_limit'])}</td><td>{_n(x['max_budget'])}</td>"
            f"<td>{_n(x['spend'])}</td></tr>"
            for x in teams
        )
        key_rows = "".join(self._key_row(k, csrf) for k in keys)
        spend_rows = "".join(
            f"<tr><td>{e(r['team_id'] or '(none)')}</td><td>{e(r['model'])}</td><td>{r['requests']}</td>"
            f"<td>{r['prompt_tokens']}</td><td>{r['completion_tokens']}</td><td>{r['cost']:.6f}</td></tr>"
            for r in spend
        )
        team_options = "".join(f'<option value="{e(x["team_id"])}">{e(x["team_id"])}</option>' for x in teams)
        body = (
            self._nav(scope, csrf)
            + notice
            + '<h2>Teams</h2><table id="teams"><tr><th>team</th><th>alias</th><th>models</th><th>rpm</th><th>tpm</th>'
            + f"<th>budget</th><th>spend</th></tr>{team_rows}</table>"
            + '<form method="post" action="/ui/teams" id="new-team">'
            + _hidden(csrf)
            + '<input name="team_id" placeholder="team id" required> <input name="team_alias" placeholder="alias"> '
            + '<input name="models" placeholder="models, comma-separated"> '
            + _limit_inputs()
            + '<button type="submit">Create team</button></form>'
            + '<h2>Keys</h2><table id="keys"><tr><th>key id</th><th>key</th><th>alias</th><th>team</th><th>rpm</th>'
            + f"<th>tpm</th><th>budget</th><th>spend</th><th>state</th><th></th></tr>{key_rows}</table>"
            + '<form method="post" action="/ui/keys" id="new-key">'
            + _hidden(csrf)
            + f'<select name="team_id"><option value="">(no team)</option>{team_options}</select> '
            + '<input name="key_alias" placeholder="alias"> '
            + _limit_inputs()
            + '<button type="submit">Create key</button></form>'
            + '<h2>Spend per team and model</h2><table id="spend"><tr><th>team</th><th>model</th><th>requests</th>'
            + f"<th>prompt tokens</th><th>completion tokens</th><th>cost</th></tr>{spend_rows}</table>"
        )
        await _page(send, status, "Teams and keys", body)

    async def audit(self, scope: Scope, receive: Receive, send: Send) -> None:
        csrf = self._csrf(scope)
        q = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items() if v[0]}
        query = AuditQuery(actor=q.get("actor"), action=q.get("action"), target=q.get("target"), limit=200)
        records = await db_call(search(self.tenancy.live().db, query))
        rows = "".join(
            f"<tr><td>{e(r['at'])}</td><td>{e(r['actor']['subject'])} ({e(r['actor']['how'])})</td>"
            f"<td>{e(r['action'])}</td><td>{e(r['target'])}</td><td>{e(r['result'])}</td>"
            f"<td><code>{e((r['before_digest'] or '')[:12])}</code> → <code>{e((r['after_digest'] or '')[:12])}</code>"
            f"</td><td>{e(r['trace_id'] or '')}</td></tr>"
            for r in records
        )
        fields = "".join(
            f'<input name="{n}" placeholder="{n}" value="{e(q.get(n, ""))}"> ' for n in ("actor", "action", "target")
        )
        body = (
            self._nav(scope, csrf)
            + f'<h2>Audit log</h2><form method="get" action="/ui/audit" id="audit-search">{fields}'
            + '<button type="submit">Search</button></form>'
            + '<table id="audit"><tr><th>at</th><th>actor</th><th>action</th><th>target</th><th>result</th>'
            + f"<th>digest before → after</th><th>trace</th></tr>{rows}</table>"
        )
        await _page(send, 200, "Audit log", body)

    # --- forms -------------------------------------------------------------------------------------------------

    async def create_team(self, scope: Scope, receive: Receive, send: Send) -> None:
        form = await self._checked_form(scope, receive)
        values = _values(form, ("team_id", "team_alias"))
        if form.get("models"):
            values["models"] = [m.strip() for m in form["models"].split(",") if m.strip()]
        await self._change(scope, receive, send, self.tenancy.new_team(scope, values))

    async def create_key(self, scope: Scope, receive: Receive, send: Send) -> None:
        form = await self._checked_form(scope, receive)
        try:
            made = await self.tenancy.new_key(scope, _values(form, ("team_id", "key_alias")))
        except GatewayError as exc:
            await self.home(scope, receive, send, _error(exc), exc.status)
            return
        notice = (
            f'<div class="secret" id="new-secret">New key <b>{e(made["key_id"])}</b>: '
            f'<code id="secret">{e(made["key"])}</code><br>Copy it now: it is not shown again.</div>'
        )
        await self.home(scope, receive, send, notice)

    async def revoke_key(self, scope: Scope, receive: Receive, send: Send) -> None:
        form = await self._checked_form(scope, receive)
        await self._change(
            scope, receive, send, self.tenancy.change_key(scope, form.get("key_id", ""), {"revoked": True})
        )

    async def key_limits(self, scope: Scope, receive: Receive, send: Send) -> None:
        form = await self._checked_form(scope, receive)
        values = _values(form, ())
        await self._change(scope, receive, send, self.tenancy.change_key(scope, form.get("key_id", ""), values))

    # --- helpers -----------------------------------------------------------------------------------------------

    async def _change(self, scope: Scope, receive: Receive, send: Send, change: Any) -> None:
        try:
            await change
        except GatewayError as exc:
            await self.home(scope, receive, send, _error(exc), exc.status)
            return
        await _redirect(send, "/ui")

    async def _checked_form(self, scope: Scope, receive: Receive) -> dict[str, str]:
        """The posted form; with a session cookie, its CSRF token must match (a bearer caller has no ambient one)."""
        form = await _form(receive)
        session: Session | None = scope.get(SESSION_SCOPE)
        if session is not None and not csrf_ok(session.csrf, form.get("csrf")):
            raise GatewayError(403, "The form's CSRF token is missing or wrong: reload the page.", code="csrf_failed")
        return form

    def _csrf(self, scope: Scope) -> str:
        session: Session | None = scope.get(SESSION_SCOPE)
        return session.csrf if session is not None else ""

    def _nav(self, scope: Scope, csrf: str) -> str:
        principal: Principal = scope["routeiq.principal"]
        return (
            f'<p>{e(principal.subject)} ({e(principal.role)}) · <a href="/ui">teams and keys</a> · '
            f'<a href="/ui/audit">audit log</a> · <form class="inline" method="post" action="/ui/logout">'
            f'{_hidden(csrf)}<button type="submit">Log out</button></form></p>'
        )

    def _key_row(self, k: dict[str, Any], csrf: str) -> str:
        kid = e(k["key_id"])
        actions = (
            "revoked"
            if k["blocked"]
            else f'<form class="inline" method="post" action="/ui/keys/revoke">{_hidden(csrf)}'
            f'<input type="hidden" name="key_id" value="{kid}"><button type="submit" id="revoke-{kid}">Revoke</button>'
            "</form>"
        )
        limits = (
            f'<form class="inline" method="post" action="/ui/keys/limits">{_hidden(csrf)}'
            f'<input type="hidden" name="key_id" value="{kid}">{_limit_inputs()}'
            '<button type="submit">Set</button></form>'
        )
        return (
            f'<tr id="key-{kid}"><td>{kid}</td><td>{e(k["key_name"])}</td><td>{e(k["key_alias"] or "")}</td>'
            f"<td>{e(k['team_id'] or '')}</td><td>{_n(k['rpm_limit'])}</td><td>{_n(k['tpm_limit'])}</td>"
            f"<td>{_n(k['max_budget'])}</td><td>{_n(k['spend'])}</td><td>{actions}</td><td>{limits}</td></tr>"
        )


def _values(form: dict[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    """The filled-in fields, numbers as numbers; what is not a number is passed on as text, for fields.parse's
    own clear error."""
    values: dict[str, Any] = {n: form[n] for n in names if form.get(n)}
    for name in _NUMBERS:
        raw = form.get(name, "").strip()
        if raw:
            try:
                values[name] = float(raw) if name == "max_budget" else int(raw)
            except ValueError:
                values[name] = raw
    return values


def _limit_inputs() -> str:
    return (
        '<input name="rpm_limit" placeholder="rpm" size="6"> <input name="tpm_limit" placeholder="tpm" size="8"> '
        '<input name="max_parallel_requests" placeholder="parallel" size="6"> '
        '<input name="max_budget" placeholder="budget" size="6"> '
    )


def _hidden(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(csrf)}">'


def _n(value: Any) -> str:
    return "" if value is None else e(str(value))


def _error(exc: GatewayError) -> str:
    return f'<p class="error" id="error">{e(exc.message)}</p>'


async def _form(receive: Receive) -> dict[str, str]:
    raw = await read_body(receive, MAX_FORM, None)
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}


async def _page(
    send: Send, status: int, title: str, body: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    doc = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} · RouteIQ</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    await send_response(send, status, doc.encode(), HTML, [*_SECURITY_HEADERS, *(headers or [])])


async def _redirect(send: Send, location: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_response(send, 303, b"", HTML, [(b"location", location.encode()), *(headers or [])])
