"""`POST /admin/reload` (config-sync's fallback when it cannot signal, and the operator's) and `GET /admin/config`.

Callers are identified by admin/identity.py (ADMIN_API_KEYS, or an OIDC token with a role): reading the config
needs viewer, a reload needs admin. With neither source configured the API answers 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from routeiq_gateway.admin.identity import AdminIdentity, require
from routeiq_gateway.audit.record import Actor, trace_id_of
from routeiq_gateway.audit.trail import AuditTrail
from routeiq_gateway.http.asgi import Receive, Scope, Send, send_response
from routeiq_gateway.lifecycle.reload import Reloader
from routeiq_gateway.routing.model_watch import ModelsRef
from routeiq_gateway.state import StateRef


class AdminEndpoints:
    def __init__(
        self,
        ref: StateRef,
        models: ModelsRef,
        reloader: Reloader,
        identity: AdminIdentity,
        activity: Callable[[], dict[str, Any]],  # e.g. {"draining": …, "in_flight": …}, read at each call
        audit: AuditTrail | None = None,
    ) -> None:
        self.ref = ref
        self.models = models
        self.reloader = reloader
        self.identity = identity
        self.activity = activity
        self.audit = audit

    async def reload(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self.identity.authenticate(scope["headers"])
        require(principal, "admin")
        actor = Actor(principal.subject, principal.how)
        ok, detail = await self.reloader.reload("admin", actor, trace_id_of(scope["headers"]))
        status = 200 if ok else 422
        body = {"reloaded": ok, "version": self.ref.current.version, "detail": detail}
        await send_response(send, status, orjson.dumps(body))

    async def config(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = await self.identity.authenticate(scope["headers"])
        require(principal, "viewer")
        state = self.ref.current
        if self.audit is not None:
            self.audit.record(
                Actor(principal.subject, principal.how),
                "config.read",
                "config",
                result="ok",
                before_digest=state.version,
                after_digest=state.version,
                trace_id=trace_id_of(scope["headers"]),
            )
        body = {
            "version": state.version,
            "models": {name: [d.litellm_model for d in group] for name, group in state.groups.items()},
            "fallbacks": state.fallbacks,
            "routers": {
                name: {
                    "strategy": spec.effective_strategy,
                    "artifact": spec.artifact,
                    "candidates": spec.candidates,
                    "serving_version": getattr(self.models.current.get(spec.artifact or ""), "version", None),
                }
                for name, spec in state.routers.items()
            },
            **self.activity(),
        }
        await send_response(send, 200, orjson.dumps(body))
