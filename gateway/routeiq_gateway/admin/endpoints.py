"""`POST /admin/reload` (config-sync's fallback when it cannot signal, and the operator's) and `GET /admin/config`.

Every admin key is compared in constant time (admission/auth.py); with no ADMIN_API_KEYS the API answers 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from routeiq_gateway.admission import auth
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
        admin_keys: tuple[bytes, ...],
        activity: Callable[[], dict[str, Any]],  # e.g. {"draining": …, "in_flight": …}, read at each call
    ) -> None:
        self.ref = ref
        self.models = models
        self.reloader = reloader
        self.admin_keys = admin_keys
        self.activity = activity

    async def reload(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth.check_any_key(self.admin_keys, *auth.auth_headers(scope))
        ok, detail = await self.reloader.reload("admin")
        status = 200 if ok else 422
        body = {"reloaded": ok, "version": self.ref.current.version, "detail": detail}
        await send_response(send, status, orjson.dumps(body))

    async def config(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth.check_any_key(self.admin_keys, *auth.auth_headers(scope))
        state = self.ref.current
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
