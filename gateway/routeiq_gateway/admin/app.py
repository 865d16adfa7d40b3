"""The admin port (:4001 by default; `--admin-port` / ROUTEIQ_ADMIN_PORT): its own ASGI app and listener, so a
NetworkPolicy can keep it off the public path. Every route names the least role it needs; `AdminAuth` says who
calls (admin/principals.py): 401 without or with bad credentials, 403 with too low a role, 403 while closed.

| route | role |
| --- | --- |
| GET /admin/config, /admin/routers, /v1/admin/spend, /v1/admin/audit, /key/info, /team/info | viewer |
| GET /v1/admin/teams[/{id}], /v1/admin/keys[/{id}] | viewer |
| POST/PATCH/DELETE on /v1/admin/teams and /v1/admin/keys; /key/generate, /key/update, /key/delete, /team/new | editor |
| POST /admin/reload | admin |
| GET /ui/login, POST /ui/login (the admin page's login form) | none |
| GET /ui, /ui/audit; POST /ui/logout | viewer |
| POST /ui/teams, /ui/keys, /ui/keys/revoke, /ui/keys/limits | editor |
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from routeiq_shared.config_schema import AdminRole

from routeiq_gateway.admin.audit_endpoints import AuditEndpoints
from routeiq_gateway.admin.endpoints import AdminEndpoints
from routeiq_gateway.admin.principals import PRINCIPAL, AdminAuth, require
from routeiq_gateway.admin.tenancy_endpoints import TenancyEndpoints
from routeiq_gateway.admin.ui import AdminUI
from routeiq_gateway.http.asgi import ClientGone, Receive, Scope, Send, lifespan, send_error, send_response
from routeiq_gateway.http.errors import GatewayError

log = logging.getLogger("routeiq.gateway")

Handler = Callable[..., Awaitable[None]]
_COLLECTIONS = {"/v1/admin/teams/": "team", "/v1/admin/keys/": "key"}


class AdminApp:
    def __init__(
        self,
        auth: AdminAuth,
        endpoints: AdminEndpoints,
        tenancy: TenancyEndpoints,
        audit: AuditEndpoints,
        ui: AdminUI | None = None,
    ) -> None:
        self.auth = auth
        t = tenancy
        self.routes: dict[tuple[str, str], tuple[AdminRole, Handler]] = {
            ("POST", "/admin/reload"): ("admin", endpoints.reload),
            ("GET", "/admin/config"): ("viewer", endpoints.config),
            ("GET", "/admin/routers"): ("viewer", endpoints.routers),
            ("GET", "/v1/admin/teams"): ("viewer", t.list_teams),
            ("POST", "/v1/admin/teams"): ("editor", t.create_team),
            ("GET", "/v1/admin/keys"): ("viewer", t.list_keys),
            ("POST", "/v1/admin/keys"): ("editor", t.create_key),
            ("GET", "/v1/admin/spend"): ("viewer", t.spend),
            ("GET", "/v1/admin/audit"): ("viewer", audit.search),
            # LiteLLM's proxy routes, its field names
            ("POST", "/key/generate"): ("editor", t.create_key),
            ("GET", "/key/info"): ("viewer", t.key_info),
            ("POST", "/key/update"): ("editor", t.litellm_update_key),
            ("POST", "/key/delete"): ("editor", t.litellm_delete_keys),
            ("POST", "/team/new"): ("editor", t.create_team),
            ("GET", "/team/info"): ("viewer", t.team_info),
        }
        self.open_routes: dict[tuple[str, str], Handler] = {}  # no credentials needed: the page's login
        if ui is not None:
            self.open_routes = {("GET", "/ui/login"): ui.login_form, ("POST", "/ui/login"): ui.login}
            self.routes |= {
                ("GET", "/ui"): ("viewer", ui.home),
                ("GET", "/ui/audit"): ("viewer", ui.audit),
                ("POST", "/ui/logout"): ("viewer", ui.logout),
                ("POST", "/ui/teams"): ("editor", ui.create_team),
                ("POST", "/ui/keys"): ("editor", ui.create_key),
                ("POST", "/ui/keys/revoke"): ("editor", ui.revoke_key),
                ("POST", "/ui/keys/limits"): ("editor", ui.key_limits),
            }
        # /v1/admin/{teams,keys}/{id}
        self.item_routes: dict[tuple[str, str], tuple[AdminRole, Handler]] = {
            ("GET", "team"): ("viewer", t.get_team),
            ("PATCH", "team"): ("editor", t.update_team),
            ("DELETE", "team"): ("editor", t.delete_team),
            ("GET", "key"): ("viewer", t.get_key),
            ("PATCH", "key"): ("editor", t.update_key),
            ("DELETE", "key"): ("editor", t.delete_key),
        }
        self._paths = {p for _, p in self.routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await lifespan(receive, send)
            return
        try:
            await self._dispatch(scope, receive, send)
        except GatewayError as exc:
            await send_error(send, exc)
        except ClientGone:
            return
        except Exception:  # a bug of ours still answers in the API's shape
            log.exception("Unhandled error on the admin port")
            await send_error(send, GatewayError(500, "Internal gateway error.", code="internal_error"))

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"].rstrip("/") or "/"
        if path in ("/health/liveness", "/health/readiness") and method == "GET":
            await send_response(send, 200, b'{"status":"ok"}')
            return
        open_route = self.open_routes.get((method, path))
        if open_route is not None:
            await open_route(scope, receive, send)
            return
        args: tuple[Any, ...] = ()
        route = self.routes.get((method, path))
        if route is None:
            for prefix, kind in _COLLECTIONS.items():
                if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                    args = (path[len(prefix) :],)
                    route = self.item_routes.get((method, kind))
                    if route is None:
                        raise GatewayError(405, f"Method {method} is not allowed on {path}.")
                    break
        if route is None:
            if path in self._paths:
                raise GatewayError(405, f"Method {method} is not allowed on {path}.")
            raise GatewayError(404, f"No route for {path}.", code="not_found")
        role, handler = route
        try:
            principal = await self.auth.authenticate(scope)
        except GatewayError as exc:
            if exc.status == 401 and method == "GET" and path.startswith("/ui"):  # a browser: to the login form
                await send_response(send, 303, b"", headers=[(b"location", b"/ui/login")])
                return
            raise
        require(principal, role)
        scope[PRINCIPAL] = principal  # the actor of the audit records the handler writes
        await handler(scope, receive, send, *args)
