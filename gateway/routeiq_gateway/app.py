"""The gateway's ASGI application: where a request is admitted, authenticated, routed, proxied and measured.

One request through /v1/*, in order:
  refuse while draining (shed.py) → authenticate (auth.py) → read the body within its deadlines (asgi.py)
  → admit against max_in_flight (shed.py) → check the body (validate.py)
  → pick deployments and call upstream with retries/fallbacks (dispatch.py, providers/)
  → send JSON or stream SSE → metrics (metrics.py) and the server span (tracing.py)
  → for a routed request, its routing record (records/).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from routeiq_shared.routing_records import finish, route_record

from routeiq_gateway.admin.endpoints import AdminEndpoints
from routeiq_gateway.admission import auth
from routeiq_gateway.admission.inflight import InFlight
from routeiq_gateway.admission.shed import admit, refuse_if_draining
from routeiq_gateway.admission.validate import CHECKS, parse_json_object
from routeiq_gateway.dispatch.dispatcher import Dispatcher, Outcome
from routeiq_gateway.http import sse
from routeiq_gateway.http.asgi import TEXT, ClientGone, Receive, Scope, Send, read_body, send_error, send_response
from routeiq_gateway.http.disconnect import BODY_TIMED_OUT, CANCEL_ON_DISCONNECT, CLIENT_GONE
from routeiq_gateway.http.errors import GatewayError, error_body
from routeiq_gateway.http.openapi import document as openapi_document
from routeiq_gateway.lifecycle.reload import Reloader
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.observability.tracing import get_tracer, parent_context, traceparent_of
from routeiq_gateway.providers import Completed, Streaming
from routeiq_gateway.records.feedback import FeedbackEndpoint
from routeiq_gateway.records.recorder import Recorder
from routeiq_gateway.routing.arms import caller_of
from routeiq_gateway.routing.model_watch import ModelsRef
from routeiq_gateway.routing.offloop import ScoringRunner
from routeiq_gateway.routing.routers import RouterPlan, prompt_text
from routeiq_gateway.state import GatewayState, StateRef

log = logging.getLogger("routeiq.gateway")

# Path → endpoint. LiteLLM's proxy also answers without the /v1 prefix; clients configured for it keep working.
PROXY_ROUTES = {
    "/v1/chat/completions": "chat/completions",
    "/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/embeddings": "embeddings",
}
_SPAN_NAMES = {e: f"POST /v1/{e}" for e in set(PROXY_ROUTES.values())}
_UNKNOWN_MODEL = "<unknown>"  # bounded metric label for names not in config
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_READY = b'{"status":"ready"}'
_CUT = GatewayError(503, "The gateway shut down before this request finished; retry it.", code="shutdown")
_ALIVE = b'{"status":"alive"}'


class _Request:
    """What one request's bookkeeping needs, filled in as the request moves along."""

    __slots__ = ("key", "model", "record", "started", "status", "usage")

    def __init__(self) -> None:
        self.key: bytes | None = None  # the API key presented (checked)
        self.model = _UNKNOWN_MODEL
        self.status = 500
        self.started = False
        self.record: dict[str, Any] | None = None  # a routed request's record, finished when it ends
        self.usage: dict[str, Any] | None = None


class GatewayApp:
    def __init__(
        self,
        ref: StateRef,
        dispatcher: Dispatcher,
        metrics: GatewayMetrics,
        reloader: Reloader,
        admin_keys: tuple[bytes, ...],
        models: ModelsRef,
        recorder: Recorder,
        scoring: ScoringRunner | None = None,
    ) -> None:
        self.ref = ref
        self.models = models
        self.scoring = scoring if scoring is not None else ScoringRunner()  # outlives reloads: what it measured
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.recorder = recorder
        self.inflight = InFlight()
        self.draining = False
        admin = AdminEndpoints(
            ref, models, reloader, admin_keys, lambda: {"draining": self.draining, "in_flight": self.inflight.requests}
        )
        feedback = FeedbackEndpoint(ref, recorder, metrics)
        self.tracer = get_tracer()
        self._openapi = orjson.dumps(openapi_document())  # built once, served as is
        metrics.bind_gauges(lambda: self.inflight.requests, lambda: self.inflight.streams)
        self._plain: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("GET", "/health/liveliness"): self._liveness,
            ("GET", "/health/liveness"): self._liveness,
            ("GET", "/health/readiness"): self._readiness,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/openapi.json"): self._openapi_json,
            ("GET", "/v1/models"): self._models,
            ("GET", "/models"): self._models,
            ("POST", "/admin/reload"): admin.reload,
            ("GET", "/admin/config"): admin.config,
            ("POST", "/v1/feedback"): feedback,
            ("POST", "/feedback"): feedback,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        path: str = scope["path"]
        endpoint = PROXY_ROUTES.get(path)
        if endpoint is not None and scope["method"] == "POST":
            await self._proxy(endpoint, scope, receive, send)
            return
        handler = self._plain.get((scope["method"], path))
        if handler is not None:
            try:
                await handler(scope, receive, send)
            except GatewayError as exc:
                await send_error(send, exc)
            return
        if endpoint is not None or any(p == path for _, p in self._plain):
            await send_error(send, GatewayError(405, f"Method {scope['method']} is not allowed on {path}."))
            return
        await send_error(send, GatewayError(404, f"No route for {path}.", code="not_found"))

    # --- the proxied request -------------------------------------------------------------------------------

    async def _proxy(self, endpoint: str, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        state = self.ref.current  # this request sees one state to the end, whatever reloads happen meanwhile
        authorization = x_api_key = length = tp = ts = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
            elif key == b"x-api-key":
                x_api_key = value
            elif key == b"content-length":
                length = value
            elif key == b"traceparent":
                tp = value
            elif key == b"tracestate":
                ts = value
        span = self.tracer.start_span(_SPAN_NAMES[endpoint], context=parent_context(tp, ts), kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span))
        req = _Request()
        try:
            try:
                refuse_if_draining(self.draining)
                req.key = auth.check_key(state.master_key, authorization, x_api_key)
                declared = _content_length(length)
                raw = await read_body(receive, state.max_body_bytes, declared)  # deadlines: http/protocol.py
                # Counted only now that the body is here: a slow sender holds no slot (shed.py).
                admit(self.inflight, state.max_in_flight, self.draining)
            except GatewayError as exc:
                if exc.status == 503:
                    self.metrics.shed.labels(exc.code or "overloaded").inc()
                raise
            self.inflight.enter()
            try:
                body = parse_json_object(raw)
                await self._serve(endpoint, state, body, req, span, scope, send, receive)
            finally:
                self.inflight.leave()
        except GatewayError as exc:
            req.status = exc.status
            if exc.status >= 500:
                span.set_status(StatusCode.ERROR, exc.message)
            if not req.started:
                await send_error(send, exc)
        except ClientGone:
            # 408 when the protocol cut a body at its deadline (it answered); else nginx's 499: the client went away
            req.status = 408 if scope.get(BODY_TIMED_OUT) else 499
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when the drain grace period is over. This request is answered
            # (503, or the in-band error of a stream) and counted, and the cancellation is acknowledged here.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            req.status = _CUT.status
            if not req.started:
                await send_error(send, _CUT)
        except Exception:  # a bug of ours must still answer in OpenAI's shape, and be logged with its trace
            log.exception("Unhandled error while serving %s", endpoint)
            span.set_status(StatusCode.ERROR, "internal error")
            req.status = 500
            if not req.started:
                await send_response(send, 500, error_body(500, "Internal gateway error.", "internal_error"))
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.observe_request(req.model, endpoint, req.status, elapsed)
            if state.access_log:  # before detaching the span, so the line carries this request's trace_id
                log.info(
                    "request",
                    extra={
                        "endpoint": endpoint,
                        "model": req.model,
                        "status": req.status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            if req.record is not None:
                self._write_record(state, req, elapsed)
            span.set_attribute("http.response.status_code", req.status)
            span.end()
            otel_context.detach(token)

    async def _serve(
        self,
        endpoint: str,
        state: GatewayState,
        body: dict[str, Any],
        req: _Request,
        span: trace.Span,
        scope: Scope,
        send: Send,
        receive: Receive,
    ) -> None:
        model, stream = CHECKS[endpoint](body)
        headers: list[tuple[bytes, bytes]] = []
        plan = state.router_plans.get(model)
        group = (
            self._group_for(state, model) if plan is None else await self._route(plan, state, body, span, headers, req)
        )
        req.model = model
        t0 = time.perf_counter()
        # A client gone while upstream works: the protocol cancels this task, freeing the slot and the upstream call.
        task = asyncio.current_task()
        scope[CANCEL_ON_DISCONNECT] = task
        try:
            outcome = await self.dispatcher.send(state, group, endpoint, body, stream, traceparent_of(span), span)
        except asyncio.CancelledError:
            if not scope.get(CLIENT_GONE) or task is None:
                raise  # the drain's grace period is over (_proxy answers that)
            task.uncancel()
            raise ClientGone from None
        finally:
            scope.pop(CANCEL_ON_DISCONNECT, None)
        dep = outcome.deployment
        self.metrics.observe_upstream(model, dep.path_name, time.perf_counter() - t0)
        if span.is_recording():  # spare the attribute work when nobody exports spans
            span.set_attributes(
                {
                    "gen_ai.request.model": model,
                    "routeiq.deployment": dep.litellm_model,
                    "routeiq.model_group": dep.model_name,
                    "routeiq.provider_path": dep.path_name,
                    "routeiq.attempts": outcome.attempts,
                    "routeiq.config_version": state.version,
                }
            )
        headers += ((b"x-routeiq-model", dep.model_name.encode()), (b"x-routeiq-provider-path", dep.path_name.encode()))
        result = outcome.result
        headers += result.headers  # the upstream's request id and rate-limit state, on both paths
        if isinstance(result, Completed):
            req.usage = result.usage
            self.metrics.observe_usage(model, result.usage)
            self.dispatcher.add_tokens(state, outcome, result.usage)  # only when a strategy reads usage
            req.status = 200
            await send_response(send, 200, result.body, headers=headers)
            return
        try:
            await self._stream(result, model, req, send, receive, headers, outcome)
        finally:
            self.dispatcher.stream_ended(outcome)
            self.dispatcher.add_tokens(state, outcome, result.usage)
            req.usage = result.usage

    def _write_record(self, state: GatewayState, req: _Request, elapsed: float) -> None:
        rec = req.record
        assert rec is not None
        finish(
            rec, status=req.status, latency_ms=elapsed * 1000, usage=req.usage, price=state.prices.get(rec["choice"])
        )
        self.recorder.write(rec, state.records)

    def _group_for(self, state: GatewayState, model: str) -> str:
        """The model group that serves a plain (not virtual) model."""
        if model not in state.groups:
            raise GatewayError(
                404, f"The model '{model}' does not exist on this gateway.", code="model_not_found", param="model"
            )
        return model

    async def _route(
        self,
        plan: RouterPlan,
        state: GatewayState,
        body: dict[str, Any],
        span: trace.Span,
        headers: list[tuple[bytes, bytes]],
        req: _Request,
    ) -> str:
        """A virtual model: the router's choice, told in the headers, the span, the metrics and its record."""
        t0 = time.perf_counter()
        arm = ""
        if plan.arms is not None:  # A/B or canary: the caller's arm decides
            plan, arm = plan.for_caller(caller_of(body, req.key), self.dispatcher.rng)
            headers.append((b"x-routeiq-router-arm", arm.encode()))
        decision = await plan.decide(
            body, self.models.current, state.groups, self.dispatcher.runtime, self.scoring, self.dispatcher.rng
        )
        seconds = time.perf_counter() - t0
        spec = plan.spec
        self.metrics.router_decisions.labels(spec.name, arm, decision.group, decision.reason).inc()
        self.metrics.router_decision_seconds.labels(plan.strategy).observe(seconds)
        headers += (
            (b"x-routeiq-router", spec.name.encode()),
            (b"x-routeiq-router-version", (decision.version or "none").encode()),
        )
        request_id = ""
        if state.records.enabled:
            now = time.time()
            request_id = state.request_ids.issue(req.key, now)
            headers.append((b"x-routeiq-request-id", request_id.encode()))
            req.record = route_record(
                request_id=request_id,
                at=now,
                router=spec.name,
                strategy=plan.strategy,
                arm=arm,
                model_version=decision.version,
                candidates=spec.candidates,
                choice=decision.group,
                score=decision.score,
                reason=decision.reason,
                fallback_reason=decision.fallback_reason,
                decision_ms=seconds * 1000,
                prompt=prompt_text(body) if state.records.prompt != "none" else "",
                policy=state.records.prompt,
            )
        if span.is_recording():
            attributes: dict[str, Any] = {
                "router.name": spec.name,
                "router.strategy": plan.strategy,
                "router.candidates": list(spec.candidates),
                "router.selected_model": decision.group,
                "router.score": -1.0 if decision.score is None else decision.score,  # -1: the strategy does not score
                "router.latency_ms": round(seconds * 1000, 4),
                "router.model_version": decision.version or "",
                "router.reason": decision.reason,
                "router.arm": arm,
            }
            if request_id:
                attributes["routeiq.request_id"] = request_id
            if decision.fallback_reason is not None:
                attributes["router.fallback_reason"] = decision.fallback_reason
                attributes["router.fallback"] = decision.answered_by
            span.set_attributes(attributes)
        return decision.group

    async def _stream(
        self,
        stream: Streaming,
        model: str,
        req: _Request,
        send: Send,
        receive: Receive,
        headers: list[tuple[bytes, bytes]],
        outcome: Outcome,
    ) -> None:
        # uvicorn's send() goes quiet once the client has gone, so watch for the disconnect to stop reading upstream.
        gone = asyncio.ensure_future(receive())
        start = time.perf_counter()
        self.inflight.streams += 1
        first = True
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + headers})
            req.started = True
            req.status = 200
            async for chunk in stream:
                if first:
                    self.metrics.ttft.labels(model).observe(time.perf_counter() - start)
                    self.dispatcher.first_chunk(outcome)
                    first = False
                if gone.done():
                    req.status = 499
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except GatewayError as exc:
            # Headers are gone already: the failure can only be told in-band, as OpenAI does.
            req.status = exc.status
            await send({"type": "http.response.body", "body": sse.event(exc.body()), "more_body": True})
        except asyncio.CancelledError:
            # Cut at the end of the drain grace period: say so, or the client takes a partial answer as whole.
            await send({"type": "http.response.body", "body": sse.event(_CUT.body()), "more_body": True})
            raise
        finally:
            self.inflight.streams -= 1
            gone.cancel()
            await stream.aclose()
            if req.started:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.metrics.observe_usage(model, stream.usage)

    # --- health, metrics, models, admin --------------------------------------------------------------------

    async def _liveness(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_response(send, 200, _ALIVE)

    async def _readiness(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.draining:
            await send_response(send, 503, b'{"status":"draining"}')
        else:
            await send_response(send, 200, _READY)

    async def _openapi_json(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_response(send, 200, self._openapi)

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_response(send, 200, self.metrics.render(), content_type=TEXT)

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.ref.current
        authorization, x_api_key = auth.auth_headers(scope)
        auth.check_key(state.master_key, authorization, x_api_key)
        await send_response(send, 200, state.models_payload)


def _content_length(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise GatewayError(400, "Invalid Content-Length header.", code="invalid_request") from None


async def _lifespan(receive: Receive, send: Send) -> None:
    # Start-up work happens before the server binds (server.py); lifespan only has to be acknowledged.
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
