"""`POST /admin/reload` (config-sync's fallback when it cannot signal, and the operator's), `GET /admin/config`
(no secret: model names and routers only) and `GET /admin/routers` (routers and the model versions they serve).

Served on the admin port; who may call what is admin/app.py's. Reloads and config reads are audited with the
caller's principal as the actor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from routeiq_gateway.admin.principals import actor_of
from routeiq_gateway.audit.record import trace_id_of
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
        activity: Callable[[], dict[str, Any]],  # e.g. {"draining": …, "in_flight": …}, read at each call
        audit: AuditTrail | None = None,
    ) -> None:
        self.ref = ref
        self.models = models
        self.reloader = reloader
        self.activity = activity
        self.audit = audit

    async def reload(self, scope: Scope, receive: Receive, send: Send) -> None:
        ok, detail = await self.reloader.reload("admin", actor_of(scope), trace_id_of(scope["headers"]))
        status = 200 if ok else 422
        body = {"reloaded": ok, "version": self.ref.current.version, "detail": detail}
        await send_response(send, status, orjson.dumps(body))

    async def config(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.ref.current
        if self.audit is not None:
            self.audit.record(
                actor_of(scope),
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
            "routers": self._routers(),
            **self.activity(),
        }
        await send_response(send, 200, orjson.dumps(body))

    async def routers(self, scope: Scope, receive: Receive, send: Send) -> None:
        models = {name: {"version": getattr(model, "version", None)} for name, model in self.models.current.items()}
        await send_response(send, 200, orjson.dumps({"routers": self._routers(), "models": models}))

    def _routers(self) -> dict[str, Any]:
        return {
            name: {
                "strategy": spec.effective_strategy,
                "artifact": spec.artifact,
                "candidates": spec.candidates,
                "serving_version": getattr(self.models.current.get(spec.artifact or ""), "version", None),
            }
            for name, spec in self.ref.current.routers.items()
        }
