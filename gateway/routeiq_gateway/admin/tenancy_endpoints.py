"""Teams, keys and spend on the admin port: REST under /v1/admin/, and LiteLLM's proxy routes (`/key/generate`,
`/key/info`, `/key/update`, `/key/delete`, `/team/new`, `/team/info`) with its field names, for users who come
from LiteLLM. Both answer in LiteLLM's field names (`key_alias`, `rpm_limit`, `max_budget`, …) and accept ours
too (tenancy/fields.py). A key's secret is in the answer to its creation only.

Every write goes to PostgreSQL first, then the key cache drops what changed and every replica is told to reload
(tenancy/service.py), so a revoked or deleted key is refused from the next request on, here and elsewhere.

Every change that succeeded is audited (audit/): `team.create|update|delete`, `key.create|update|revoke|delete`,
target `team:<id>` / `key:<id>`, the caller's principal as the actor, and digests of the record as the API shows
it before and after — which never holds a key's secret. Refused requests change nothing and are not recorded."""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Any
from urllib.parse import parse_qs

import orjson

from routeiq_gateway.admin.principals import actor_of
from routeiq_gateway.admission.validate import parse_json_object
from routeiq_gateway.audit.record import trace_id_of
from routeiq_gateway.audit.trail import AuditTrail
from routeiq_gateway.http.asgi import Receive, Scope, Send, read_body, send_response
from routeiq_gateway.http.errors import GatewayError, bad_request
from routeiq_gateway.tenancy import fields, store
from routeiq_gateway.tenancy.key_cache import DB_ERRORS
from routeiq_gateway.tenancy.records import KEY_PREFIX
from routeiq_gateway.tenancy.service import Tenancy

MAX_ADMIN_BODY = 256 * 1024
_OFF = GatewayError(
    503, "Virtual keys are off on this gateway: set DATABASE_URL to manage teams and keys.", code="virtual_keys_off"
)


def _shared_out(r: dict[str, Any]) -> dict[str, Any]:
    """What teams and keys both have, in LiteLLM's names."""
    return {
        "models": r["models"],
        "rpm_limit": r["rpm"],
        "tpm_limit": r["tpm"],
        "max_parallel_requests": r["max_parallel"],
        "max_budget": r["budget"],
        "budget_duration": r["budget_period"],
        "budget_reset_at": r["budget_reset_at"],
        "spend": r["spend"],
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
    }


def team_out(row: dict[str, Any]) -> dict[str, Any]:
    r = store.jsonable(row)
    return {"team_id": r["id"], "team_alias": r["alias"], **_shared_out(r)}


def key_out(row: dict[str, Any]) -> dict[str, Any]:
    r = store.jsonable(row)
    return {
        "key_id": r["id"],
        "token": r["id"],  # LiteLLM's name for the key's stored identifier (never the secret)
        "key_name": f"{r['key_prefix']}…",
        "key_alias": r["alias"],
        "team_id": r["team_id"],
        **_shared_out(r),
        "expires": r["expires_at"],
        "blocked": r["revoked"],
        "metadata": r["metadata"],
    }


def digest(out: dict[str, Any] | None) -> str | None:
    """Names a team's or key's public record (team_out/key_out: no secret) for the audit trail."""
    return None if out is None else hashlib.sha256(orjson.dumps(out, option=orjson.OPT_SORT_KEYS)).hexdigest()


class TenancyEndpoints:
    def __init__(self, tenancy: Tenancy | None, audit: AuditTrail | None = None) -> None:
        self.tenancy = tenancy
        self.audit = audit

    def _audit(
        self, scope: Scope, action: str, target: str, before: dict[str, Any] | None, after: dict[str, Any] | None
    ) -> None:
        if self.audit is not None:
            self.audit.record(
                actor_of(scope),
                action,
                target,
                result="ok",
                before_digest=digest(before),
                after_digest=digest(after),
                trace_id=trace_id_of(scope["headers"]),
            )

    def live(self) -> Tenancy:
        """The tenancy, or 503 while virtual keys are off (no DATABASE_URL)."""
        if self.tenancy is None:
            raise _OFF
        return self.tenancy

    # --- teams -------------------------------------------------------------------------------------------------

    async def create_team(self, scope: Scope, receive: Receive, send: Send) -> None:
        out = await self.new_team(scope, await _body(receive))
        await _json(send, 201 if scope["path"].startswith("/v1/") else 200, out)

    async def new_team(self, scope: Scope, body: dict[str, Any]) -> dict[str, Any]:
        """Create, audit; the team as the API shows it (the admin page creates through here too)."""
        t = self.live()
        if "team_id" in body and "id" not in body:  # LiteLLM's name for it
            body["id"] = body.pop("team_id")
        values = fields.parse(body, fields.TEAM_FIELDS)
        out = team_out(await db_call(store.create_team(t.db, values)))
        self._audit(scope, "team.create", f"team:{out['team_id']}", None, out)
        return out

    async def list_teams(self, scope: Scope, receive: Receive, send: Send) -> None:
        rows = await db_call(store.list_teams(self.live().db))
        await _json(send, 200, {"data": [team_out(r) for r in rows]})

    async def get_team(self, scope: Scope, receive: Receive, send: Send, team_id: str) -> None:
        row = await db_call(store.get_team(self.live().db, team_id))
        await _json(send, 200, team_out(row))

    async def update_team(self, scope: Scope, receive: Receive, send: Send, team_id: str) -> None:
        t = self.live()
        values = fields.parse(await _body(receive), fields.TEAM_FIELDS[1:])
        before = team_out(await db_call(store.get_team(t.db, team_id)))
        out = team_out(await db_call(store.update_team(t.db, team_id, values)))
        self._audit(scope, "team.update", f"team:{team_id}", before, out)
        await t.changed()  # keys carry their team's limits and models
        await _json(send, 200, out)

    async def delete_team(self, scope: Scope, receive: Receive, send: Send, team_id: str) -> None:
        t = self.live()
        before = team_out(await db_call(store.get_team(t.db, team_id)))
        await db_call(store.delete_team(t.db, team_id))
        self._audit(scope, "team.delete", f"team:{team_id}", before, None)
        await t.changed()
        await _json(send, 200, {"deleted": team_id})

    async def team_info(self, scope: Scope, receive: Receive, send: Send) -> None:
        """LiteLLM: GET /team/info?team_id=…"""
        t = self.live()
        team_id = query_param(scope, "team_id")
        row = await db_call(store.get_team(t.db, team_id))
        keys = await db_call(store.list_keys(t.db, team_id))
        await _json(send, 200, {"team_id": team_id, "team_info": team_out(row), "keys": [key_out(k) for k in keys]})

    # --- keys --------------------------------------------------------------------------------------------------

    async def create_key(self, scope: Scope, receive: Receive, send: Send) -> None:
        out = await self.new_key(scope, await _body(receive))
        await _json(send, 201 if scope["path"].startswith("/v1/") else 200, out)

    async def new_key(self, scope: Scope, body: dict[str, Any]) -> dict[str, Any]:
        """Create, audit, announce; the key as the API shows it plus its secret (`key`), this once."""
        t = self.live()
        values = fields.parse(body, fields.KEY_FIELDS)
        row, secret = await db_call(store.create_key(t.db, values))
        out = key_out(row)
        self._audit(scope, "key.create", f"key:{out['key_id']}", None, out)
        await t.changed()
        return {**out, "key": secret}

    async def list_keys(self, scope: Scope, receive: Receive, send: Send) -> None:
        team_id = query_param(scope, "team_id", required=False)
        rows = await db_call(store.list_keys(self.live().db, team_id))
        await _json(send, 200, {"data": [key_out(r) for r in rows]})

    async def get_key(self, scope: Scope, receive: Receive, send: Send, key_id: str) -> None:
        await _json(send, 200, key_out(await db_call(store.get_key(self.live().db, key_id))))

    async def update_key(self, scope: Scope, receive: Receive, send: Send, key_id: str) -> None:
        await self._update_key(scope, send, key_id, await _body(receive))

    async def delete_key(self, scope: Scope, receive: Receive, send: Send, key_id: str) -> None:
        t = self.live()
        before = key_out(await db_call(store.get_key(t.db, key_id)))  # 404 when there is none
        deleted = await db_call(store.delete_keys(t.db, [key_id]))
        if not deleted:
            raise GatewayError(404, f"No key '{key_id}'.", code="not_found")
        self._audit(scope, "key.delete", f"key:{key_id}", before, None)
        await t.changed(set(deleted))
        await _json(send, 200, {"deleted": key_id})

    async def key_info(self, scope: Scope, receive: Receive, send: Send) -> None:
        """LiteLLM: GET /key/info?key=<the secret or its key id>"""
        t = self.live()
        ref = query_param(scope, "key")
        row = await db_call(store.get_key(t.db, await self._key_id(ref)))
        await _json(send, 200, {"key": row["id"], "info": key_out(row)})

    async def litellm_update_key(self, scope: Scope, receive: Receive, send: Send) -> None:
        """LiteLLM: POST /key/update {"key": …, fields…}"""
        body = await _body(receive)
        ref = body.pop("key", None)
        if not isinstance(ref, str) or not ref:
            raise bad_request("key is required: the key or its key id.", "key")
        await self._update_key(scope, send, await self._key_id(ref), body)

    async def litellm_delete_keys(self, scope: Scope, receive: Receive, send: Send) -> None:
        """LiteLLM: POST /key/delete {"keys": [...]} → {"deleted_keys": [...]}"""
        t = self.live()
        body = await _body(receive)
        refs = body.get("keys")
        if not isinstance(refs, list) or not refs or not all(isinstance(k, str) and k for k in refs):
            raise bad_request("keys must be a non-empty list of keys or key ids.", "keys")
        ids = [await self._key_id(r) for r in refs]
        before = {r["id"]: key_out(r) for r in await db_call(store.list_keys(t.db)) if r["id"] in ids}
        deleted = await db_call(store.delete_keys(t.db, ids))
        for key_id in deleted:
            self._audit(scope, "key.delete", f"key:{key_id}", before.get(key_id), None)
        await t.changed(set(deleted))
        await _json(send, 200, {"deleted_keys": refs if len(deleted) == len(ids) else deleted})

    async def _update_key(self, scope: Scope, send: Send, key_id: str, body: dict[str, Any]) -> None:
        await _json(send, 200, await self.change_key(scope, key_id, body))

    async def change_key(self, scope: Scope, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Update (a revocation is `revoked: true`), audit, announce; the key as the API shows it."""
        t = self.live()
        values = fields.parse(body, fields.KEY_FIELDS)
        before = key_out(await db_call(store.get_key(t.db, key_id)))
        out = key_out(await db_call(store.update_key(t.db, key_id, values)))
        revoked = out["blocked"] and not before["blocked"]
        self._audit(scope, "key.revoke" if revoked else "key.update", f"key:{key_id}", before, out)
        await t.changed({key_id})
        return out

    async def _key_id(self, ref: str) -> str:
        return await db_call(store.key_id_of_secret(self.live().db, ref)) if ref.startswith(KEY_PREFIX) else ref

    # --- spend -------------------------------------------------------------------------------------------------

    async def spend(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /v1/admin/spend?start=YYYY-MM-DD&end=YYYY-MM-DD&team_id=… : spend per team and model."""
        t = self.live()
        start, end = _day(scope, "start"), _day(scope, "end")
        team_id = query_param(scope, "team_id", required=False)
        rows = await db_call(store.spend_report(t.db, start, end, team_id))
        data = [{**store.jsonable(r), "team_id": r["team_id"] or None} for r in rows]
        await _json(send, 200, {"data": data, "unflushed_rows": t.spend.pending})


async def _body(receive: Receive) -> dict[str, Any]:
    raw = await read_body(receive, MAX_ADMIN_BODY, None)
    if not raw.strip():
        return {}
    return parse_json_object(raw)  # 400 when not a JSON object


async def db_call(awaitable: Any) -> Any:
    try:
        return await awaitable
    except DB_ERRORS as exc:
        raise GatewayError(
            503, f"The key store is unreachable; nothing was changed. ({type(exc).__name__})", code="key_store_down"
        ) from None


def query_param(scope: Scope, name: str, required: bool = True) -> Any:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    if not values:
        if required:
            raise bad_request(f"Query parameter '{name}' is required.", name)
        return None
    return values[0]


def _day(scope: Scope, name: str) -> date | None:
    raw = query_param(scope, name, required=False)
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise bad_request(f"{name} must be a date, YYYY-MM-DD.", name) from None


async def _json(send: Send, status: int, body: Any) -> None:
    await send_response(send, status, orjson.dumps(body))
