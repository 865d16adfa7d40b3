"""`POST /v1/feedback {"request_id": "...", "score": 0.0-1.0}`: a client's verdict on a routed answer, recorded
beside the routing records and joined to the request's record by the reader (routeiq_shared/routing_records.py).

The request id is the `x-routeiq-request-id` header of the routed response. It is checked from the id alone
(request_ids.py), so the feedback may reach any pod of the fleet; it must come with the key the request was made
with. Errors have OpenAI's shape: 400 for a malformed body, 404 for an id this fleet did not issue to this caller
or whose feedback window has passed, 503 when the spool cannot keep the feedback (retry later).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from routeiq_shared.routing_records import feedback_record

from routeiq_gateway.admission import auth
from routeiq_gateway.admission.validate import parse_json_object
from routeiq_gateway.http.asgi import Receive, Scope, Send, read_body, send_response
from routeiq_gateway.http.errors import GatewayError, bad_request
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.records.recorder import Recorder
from routeiq_gateway.records.request_ids import IdCheck
from routeiq_gateway.state import GatewayState, StateRef

MAX_BODY = 16 * 1024
# (state, authorization, x-api-key) → (the presented key, whatever else the API's check returns)
Authenticate = Callable[[GatewayState, bytes | None, bytes | None], Awaitable[tuple[bytes | None, Any]]]
_FIELDS = frozenset({"request_id", "score"})


class FeedbackEndpoint:
    def __init__(
        self, ref: StateRef, recorder: Recorder, metrics: GatewayMetrics, authenticate: Authenticate | None = None
    ) -> None:
        self.ref = ref
        self.recorder = recorder
        self.metrics = metrics
        self.authenticate = authenticate  # the API's own (virtual keys too); None: the master key alone

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.ref.current
        if self.authenticate is None:
            key = auth.check_key(state.master_key, *auth.auth_headers(scope))
        else:
            key = (await self.authenticate(state, *auth.auth_headers(scope)))[0]
        result = "invalid"
        try:
            if not state.records.enabled:
                result = "disabled"
                raise GatewayError(
                    404,
                    "Feedback is off on this gateway: routing records are disabled (routeiq.records.enabled).",
                    code="feedback_disabled",
                )
            body = parse_json_object(await read_body(receive, MAX_BODY, None))
            request_id, score = _parse(body)
            check = state.request_ids.check(request_id, key, time.time(), state.records.feedback_window_seconds)
            if check is IdCheck.UNKNOWN:
                result = "unknown"
                raise GatewayError(
                    404,
                    "No routed request with this request_id was made with this API key.",
                    code="request_not_found",
                    param="request_id",
                )
            if check is IdCheck.EXPIRED:
                result = "expired"
                raise GatewayError(
                    404,
                    f"The feedback window for this request has passed "
                    f"({state.records.feedback_window_seconds} s after the request).",
                    code="request_expired",
                    param="request_id",
                )
            if not self.recorder.write(feedback_record(request_id, score, time.time()), state.records):
                result = "dropped"
                raise GatewayError(
                    503, "The feedback could not be recorded now; retry later.", code="feedback_not_recorded"
                )
            result = "recorded"
        finally:
            self.metrics.feedback.labels(result).inc()
        payload = {"object": "feedback", "request_id": request_id, "score": score, "recorded": True}
        await send_response(send, 200, orjson.dumps(payload))


def _parse(body: dict[str, Any]) -> tuple[str, float]:
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise bad_request(f"Unrecognized request argument supplied: {', '.join(unknown)}", param=unknown[0])
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise bad_request("'request_id' is required: the x-routeiq-request-id of a routed response.", "request_id")
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise bad_request("'score' is required: a number from 0 (bad) to 1 (good).", "score")
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise bad_request(f"'score' must be between 0 and 1, got {score}.", "score")
    return request_id, float(score)
