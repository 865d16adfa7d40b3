"""The gateway's ASGI application: where a request is admitted, authenticated, routed, proxied and measured.

One request through /v1/*, in order:
  refuse while draining (shed.py) → authenticate (auth.py) → read the body within its deadlines (asgi.py)
  → admit against max_in_flight (shed.py) → check the body (validate.py) → key's models and limits
  → the response cache: a hit is answered here (cache/)
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

from routeiq_gateway.admission import auth
from routeiq_gateway.admission.endpoint_checks import SURFACE_CHECKS
from routeiq_gateway.admission.inflight import InFlight
from routeiq_gateway.admission.limits import Ticket
from routeiq_gateway.admission.shed import admit, refuse_if_draining
from routeiq_gateway.admission.validate import CHECKS, parse_json_object
from routeiq_gateway.admission.virtual_keys import KeyAdmission, check_model, may_use
from routeiq_gateway.cache.capture import Capture
from routeiq_gateway.cache.controls import NONE, Plan, plan_for, take_controls
from routeiq_gateway.cache.entry import Entry
from routeiq_gateway.cache.key import cache_key, tenant_of
from routeiq_gateway.cache.store import ResponseCache
from routeiq_gateway.dispatch.dispatcher import Dispatcher, Outcome
from routeiq_gateway.http import sse
from routeiq_gateway.http.anthropic_errors import send_anthropic_error
from routeiq_gateway.http.asgi import (
    TEXT,
    ClientGone,
    Receive,
    Scope,
    Send,
    lifespan,
    read_body,
    send_error,
    send_response,
)
from routeiq_gateway.http.disconnect import BODY_TIMED_OUT, CANCEL_ON_DISCONNECT, CLIENT_GONE
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.http.multipart import parse_form
from routeiq_gateway.http.openapi import document as openapi_document
from routeiq_gateway.lifecycle.dependency_health import DependencyHealth
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.observability.tracing import get_tracer, parent_context, traceparent_of
from routeiq_gateway.providers import Completed, Streaming
from routeiq_gateway.providers.surface import SURFACE_ENDPOINTS, SurfaceProvider, served_path
from routeiq_gateway.records.feedback import FeedbackEndpoint
from routeiq_gateway.records.recorder import Recorder
from routeiq_gateway.routing.arms import caller_of
from routeiq_gateway.routing.model_watch import ModelsRef
from routeiq_gateway.routing.offloop import ScoringRunner
from routeiq_gateway.routing.routable import routing_body
from routeiq_gateway.routing.routers import RouterPlan, prompt_text
from routeiq_gateway.state import GatewayState, StateRef
from routeiq_gateway.tenancy.records import VirtualKey
from routeiq_gateway.tenancy.service import Tenancy

log = logging.getLogger("routeiq.gateway")

# Path → endpoint. LiteLLM's proxy also answers without the /v1 prefix; clients configured for it keep working.
PROXY_ROUTES = {
    "/v1/chat/completions": "chat/completions",
    "/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/embeddings": "embeddings",
    # The rest of the API surface (providers/surface.py): OpenAI's Responses, Anthropic's Messages, and the rest.
    "/v1/responses": "responses",
    "/responses": "responses",
    "/v1/messages": "messages",
    "/v1/moderations": "moderations",
    "/moderations": "moderations",
    "/v1/images/generations": "images/generations",
    "/images/generations": "images/generations",
    "/v1/audio/speech": "audio/speech",
    "/audio/speech": "audio/speech",
    "/v1/audio/transcriptions": "audio/transcriptions",
    "/audio/transcriptions": "audio/transcriptions",
    "/v1/rerank": "rerank",
    "/rerank": "rerank",
}
_SPAN_NAMES = {e: f"POST /v1/{e}" for e in set(PROXY_ROUTES.values())}
_CHECKS = {**CHECKS, **SURFACE_CHECKS}
_UPLOAD = "audio/transcriptions"  # the one endpoint whose body is a multipart form, not JSON
# Out of scope, and said so: an SDK's files or batches call gets a 404 that names why, not "no route".
_OUT_OF_SCOPE = ("/v1/files", "/files", "/v1/batches", "/batches")
_UNKNOWN_MODEL = "<unknown>"  # bounded metric label for names not in config
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_READY = b'{"status":"ready"}'
_CUT = GatewayError(503, "The gateway shut down before this request finished; retry it.", code="shutdown")
_ALIVE = b'{"status":"alive"}'
_ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}  # a cache hit: no upstream tokens


class _Request:
    """What one request's bookkeeping needs, filled in as the request moves along."""

    __slots__ = ("group", "key", "limit", "model", "record", "started", "status", "usage", "vkey")

    def __init__(self) -> None:
        self.key: bytes | None = None  # the API key presented (checked)
        self.vkey: VirtualKey | None = None  # its record when it is a virtual key (limits, budget, team)
        self.group: str | None = None  # the model group that answered: its price makes the spend
        self.model = _UNKNOWN_MODEL
        self.status = 500
        self.started = False
        self.record: dict[str, Any] | None = None  # a routed request's record, finished when it ends
        self.usage: dict[str, Any] | None = None
        self.limit: Ticket | None = None  # its hold on the key's and team's limits (admission/limits.py)


class GatewayApp:
    def __init__(
        self,
        ref: StateRef,
        dispatcher: Dispatcher,
        metrics: GatewayMetrics,
        models: ModelsRef,
        recorder: Recorder,
        scoring: ScoringRunner | None = None,
        tenancy: Tenancy | None = None,
        dependencies: DependencyHealth | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self.ref = ref
        self.dependencies = dependencies
        self.cache = cache if cache is not None else ResponseCache(None, metrics)  # outlives reloads
        self.models = models
        self.scoring = scoring if scoring is not None else ScoringRunner()  # outlives reloads: what it measured
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.recorder = recorder
        self.inflight = InFlight()
        self.draining = False
        self.tenancy = tenancy
        self._keys = KeyAdmission(tenancy.cache) if tenancy is not None else None
        feedback = FeedbackEndpoint(ref, recorder, metrics, self._authenticate)
        surface = SurfaceProvider(dispatcher)
        self._providers = {endpoint: surface for endpoint in SURFACE_ENDPOINTS}  # chat's: None (by path)
        self.tracer = get_tracer()
        self._openapi = orjson.dumps(openapi_document())  # built once, served as is
        metrics.bind_gauges(lambda: self.inflight.requests, lambda: self.inflight.streams)
        self._plain: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("GET", "/health/liveliness"): self._liveness,
            ("GET", "/health/liveness"): self._liveness,
            ("GET", "/health/readiness"): self._readiness,
            ("GET", "/health/dependencies"): self._dependencies,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/openapi.json"): self._openapi_json,
            ("GET", "/v1/models"): self._models,
            ("GET", "/models"): self._models,
            ("POST", "/v1/feedback"): feedback,
            ("POST", "/feedback"): feedback,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await lifespan(receive, send)
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
        if path.startswith(("/v1/models/", "/models/")) and scope["method"] == "GET":
            try:
                await self._model(scope, path.partition("/models/")[2], send)
            except GatewayError as exc:
                await send_error(send, exc)
            return
        if path.startswith(_OUT_OF_SCOPE):
            what = "Files" if "/files" in path else "Batches"
            message = f"{what} are not served by this gateway (out of scope): call the provider's API for them."
            await send_error(send, GatewayError(404, message, code="not_supported"))
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
                req.key, req.vkey = await self._authenticate(state, authorization, x_api_key)
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
                body = (
                    parse_json_object(raw) if endpoint != _UPLOAD else parse_form(raw, _header(scope, b"content-type"))
                )
                await self._serve(endpoint, state, body, req, span, scope, send, receive)
            finally:
                self.inflight.leave()
        except GatewayError as exc:
            req.status = exc.status
            if exc.status >= 500:
                span.set_status(StatusCode.ERROR, exc.message)
            if not req.started:
                await _error_sender(endpoint)(send, exc)
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
                await _error_sender(endpoint)(send, _CUT)
        except Exception:  # a bug of ours must still answer in OpenAI's shape, and be logged with its trace
            log.exception("Unhandled error while serving %s", endpoint)
            span.set_status(StatusCode.ERROR, "internal error")
            req.status = 500
            if not req.started:
                await _error_sender(endpoint)(send, GatewayError(500, "Internal gateway error.", code="internal_error"))
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
            if req.limit is not None and self.tenancy is not None:  # tpm corrected by the usage, slots freed
                self.tenancy.limits.finish(req.limit, req.usage, answered=req.started or req.status == 200)
            if req.vkey is not None and req.usage and self.tenancy is not None and req.group is not None:
                self.tenancy.spend.add(req.vkey, req.group, req.usage, state.prices.get(req.group))
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
        model, stream = _CHECKS[endpoint](body)
        # `cache` is a control for the gateway, never a provider parameter (cache/controls.py)
        controls = NONE if endpoint == _UPLOAD else take_controls(body, _cache_control(scope, state))
        headers: list[tuple[bytes, bytes]] = []
        if req.vkey is not None and self.tenancy is not None:
            check_model(req.vkey, model)  # 403 before any routing or upstream work
            req.limit = await self.tenancy.limits.admit(req.vkey, endpoint, body)  # 429 over a limit or budget
            if req.limit is not None:
                headers += req.limit.headers
        plan = state.router_plans.get(model)
        plain_group = self._group_for(state, model) if plan is None else ""
        req.model = model if plan is not None else state.metric_model(model)  # a wildcard's pattern, not the name
        caching = plan_for(state.cache, endpoint, controls) if state.cache.enabled else None
        store_key = None
        if caching is not None:
            store_key = await self._from_cache(state, caching, endpoint, model, stream, body, req, span, headers, send)
            if req.status == 200:  # answered from the cache
                return
        view = body if plan is None else routing_body(endpoint, body, model)  # what a router reads (routable.py)
        group = plain_group if plan is None else await self._route(plan, state, view, span, headers, req)
        t0 = time.perf_counter()
        # A client gone while upstream works: the protocol cancels this task, freeing the slot and the upstream call.
        task = asyncio.current_task()
        scope[CANCEL_ON_DISCONNECT] = task
        try:
            provider = self._providers.get(endpoint)
            outcome = await self.dispatcher.send(
                state, group, endpoint, body, stream, traceparent_of(span), span, provider
            )
        except asyncio.CancelledError:
            if not scope.get(CLIENT_GONE) or task is None:
                raise  # the drain's grace period is over (_proxy answers that)
            task.uncancel()
            raise ClientGone from None
        finally:
            scope.pop(CANCEL_ON_DISCONNECT, None)
        dep = outcome.deployment
        req.group = dep.model_name
        path = dep.path_name if provider is None and not dep.translated else served_path(dep, endpoint)
        self.metrics.observe_upstream(model, path, time.perf_counter() - t0)
        if span.is_recording():  # spare the attribute work when nobody exports spans
            span.set_attributes(
                {
                    "gen_ai.request.model": model,
                    "routeiq.deployment": dep.litellm_model,
                    "routeiq.model_group": dep.model_name,
                    "routeiq.provider_path": path,
                    "routeiq.attempts": outcome.attempts,
                    "routeiq.config_version": state.version,
                }
            )
        headers += ((b"x-routeiq-model", dep.model_name.encode()), (b"x-routeiq-provider-path", path.encode()))
        result = outcome.result
        # The upstream's request id and rate-limit state, on both paths (a virtual key with limits: ours instead).
        headers += result.headers if req.limit is None else req.limit.upstream_headers(result.headers)
        if isinstance(result, Completed):
            req.usage = result.usage
            self.metrics.observe_usage(model, result.usage)
            self.dispatcher.add_tokens(state, outcome, result.usage)  # only when a strategy reads usage
            if store_key is not None and caching is not None:  # stored before it is sent: the next request hits
                entry = Entry(False, result.content_type, dep.model_name, time.time(), result.body)
                await self.cache.put(state.cache, store_key, entry, caching.ttl)
            req.status = 200
            await send_response(send, 200, result.body, content_type=result.content_type, headers=headers)
            return
        store = None
        if store_key is not None and caching is not None:
            store = (state, caching, store_key, dep.model_name)
        try:
            await self._stream(result, model, req, send, receive, headers, outcome, store)
        finally:
            self.dispatcher.stream_ended(outcome)
            self.dispatcher.add_tokens(state, outcome, result.usage)
            req.usage = result.usage

    async def _from_cache(
        self,
        state: GatewayState,
        caching: Plan,
        endpoint: str,
        model: str,
        stream: bool,
        body: dict[str, Any],
        req: _Request,
        span: trace.Span,
        headers: list[tuple[bytes, bytes]],
        send: Send,
    ) -> str | None:
        """Answer from the cache (req.status 200) or say `x-routeiq-cache: miss`; the key to store the answer
        under, when it is to be stored."""
        try:
            group = state.aliases.get(model, model)
            key = cache_key(caching.namespace, tenant_of(req.vkey, req.key), group, endpoint, stream, body)
        except ValueError:
            return None  # a body that has no canonical form (an integer past 64 bits) is not cached
        entry = None
        label = state.aliases.get(req.model, req.model)  # the group (a wildcard: its pattern), for the metrics
        if caching.read:
            entry = await self.cache.get(state.cache, key, caching.max_age, label)
        else:
            self.cache.count_miss(state.cache, label)
        span.set_attribute("cache.hit", entry is not None)
        if entry is None or entry.stream != stream:
            headers.append((b"x-routeiq-cache", b"miss"))
            return key if caching.write else None
        # A hit costs no upstream tokens: spend and tpm see zero, the request is counted (as LiteLLM: cost 0).
        req.usage, req.group = _ZERO_USAGE, entry.group
        headers += ((b"x-routeiq-cache", b"hit"), (b"x-routeiq-model", entry.group.encode()))
        if not entry.stream:
            req.status = 200
            await send_response(send, 200, entry.body, content_type=entry.content_type, headers=headers)
            return None
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + headers})
        req.started = True
        req.status = 200
        await send({"type": "http.response.body", "body": entry.body, "more_body": False})
        return None

    def _write_record(self, state: GatewayState, req: _Request, elapsed: float) -> None:
        rec = req.record
        assert rec is not None
        finish(
            rec, status=req.status, latency_ms=elapsed * 1000, usage=req.usage, price=state.prices.get(rec["choice"])
        )
        self.recorder.write(rec, state.records)

    def _group_for(self, state: GatewayState, model: str) -> str:
        """The model group that serves a plain (not virtual) model."""
        if state.group(model) is None:
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
        store: tuple[GatewayState, Plan, str, str] | None = None,
    ) -> None:
        capture = Capture(store[0].cache.max_entry_bytes) if store is not None else None
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
                if capture is not None:
                    capture.add(chunk)
            if store is not None and capture is not None and req.status == 200 and not capture.over:
                # a whole stream, stored before its end is sent: a request after this one replays it
                state, caching, key, group = store
                entry = Entry(True, _SSE_HEADERS[0][1], group, time.time(), capture.value())
                await self.cache.put(state.cache, key, entry, caching.ttl)
        except GatewayError as exc:
            # Headers are gone already: the failure can only be told in-band, as OpenAI does.
            req.status = exc.status
            await send({"type": "http.response.body", "body": _in_band(stream, exc), "more_body": True})
        except asyncio.CancelledError:
            # Cut at the end of the drain grace period: say so, or the client takes a partial answer as whole.
            await send({"type": "http.response.body", "body": _in_band(stream, _CUT), "more_body": True})
            raise
        finally:
            self.inflight.streams -= 1
            gone.cancel()
            await stream.aclose()
            if req.started:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.metrics.observe_usage(model, stream.usage)

    async def _authenticate(
        self, state: GatewayState, authorization: bytes | None, x_api_key: bytes | None
    ) -> tuple[bytes | None, VirtualKey | None]:
        """The master key alone without DATABASE_URL; with it, the master key or a virtual key (virtual_keys.py)."""
        if self._keys is None:
            return auth.check_key(state.master_key, authorization, x_api_key), None
        return await self._keys.admit(state.master_key, authorization, x_api_key)

    # --- health, metrics, models --------------------------------------------------------------------

    async def _liveness(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_response(send, 200, _ALIVE)

    async def _readiness(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.draining:
            await send_response(send, 503, b'{"status":"draining"}')
        else:
            await send_response(send, 200, _READY)

    async def _dependencies(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.dependencies is None:
            raise GatewayError(404, "Dependency health is not available in this process.", code="not_found")
        await send_response(send, 200, await self.dependencies.body())

    async def _openapi_json(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_response(send, 200, self._openapi)

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_response(send, 200, self.metrics.render(), content_type=TEXT)

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.ref.current
        _, vkey = await self._authenticate(state, *auth.auth_headers(scope))
        if vkey is None or not (vkey.models or (vkey.team is not None and vkey.team.models)):
            await send_response(send, 200, state.models_payload)
            return
        # A virtual key with model restrictions sees the models it may use, as LiteLLM's proxy answers it.
        payload = orjson.loads(state.models_payload)
        payload["data"] = [entry for entry in payload["data"] if may_use(vkey, entry["id"])]
        await send_response(send, 200, orjson.dumps(payload))

    async def _model(self, scope: Scope, name: str, send: Send) -> None:
        """GET /v1/models/{id}: one entry of the list (a model group or a router), as OpenAI answers it."""
        state = self.ref.current
        _, vkey = await self._authenticate(state, *auth.auth_headers(scope))
        for entry in orjson.loads(state.models_payload)["data"]:
            if entry["id"] == name and (vkey is None or may_use(vkey, name)):
                await send_response(send, 200, orjson.dumps(entry))
                return
        raise GatewayError(
            404, f"The model '{name}' does not exist on this gateway.", code="model_not_found", param="model"
        )


def _error_sender(endpoint: str) -> Callable[[Send, GatewayError], Awaitable[None]]:
    """Anthropic's error shape on its Messages ingress (its SDK parses that); OpenAI's everywhere else."""
    return send_anthropic_error if endpoint == "messages" else send_error


def _in_band(stream: Streaming, exc: GatewayError) -> bytes:
    """An error told inside a stream whose headers are sent: in the stream's own protocol when it has one."""
    error_event = getattr(stream, "error_event", None)
    if error_event is not None:
        body: bytes = error_event(exc)
        return body
    return sse.event(exc.body())


def _cache_control(scope: Scope, state: GatewayState) -> bytes | None:
    """`Cache-Control` (LiteLLM reads its s-maxage as the entry's ttl); looked for only while the cache is on."""
    return _header(scope, b"cache-control") if state.cache.enabled else None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _content_length(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise GatewayError(400, "Invalid Content-Length header.", code="invalid_request") from None
