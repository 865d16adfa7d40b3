"""Prometheus metrics of the gateway, in a registry of its own (created at start-up, not at import).

Hot-path cost matters here: label children are cached per (model, status), and the in-flight gauges read
counters the request path keeps anyway instead of being updated on every request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from routeiq_shared.breaker import BreakerMetrics, BreakerPolicy, BreakerState, CircuitBreaker

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "routeiq_requests", "Requests by model, endpoint and status", ["model", "endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "routeiq_request_duration_seconds", "Total request latency", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.upstream_latency = Histogram(
            "routeiq_upstream_duration_seconds",
            "Upstream call latency (to headers for streams)",
            ["model", "path"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "routeiq_time_to_first_token_seconds",
            "Time to first streamed chunk",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "routeiq_tokens",
            "Tokens by model and direction (in = prompt, out = completion)",
            ["model", "direction"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "routeiq_upstream_errors", "Failed upstream attempts by model and reason", ["model", "reason"], registry=r
        )
        self.retries = Counter("routeiq_upstream_retries", "Retried upstream attempts", ["model"], registry=r)
        self.fallbacks = Counter(
            "routeiq_fallbacks", "Requests served by a fallback model group", ["model", "fallback"], registry=r
        )
        self.shed = Counter(
            "routeiq_shed_requests", "Requests refused with 503 by load shedding or drain", ["reason"], registry=r
        )
        self.reloads = Counter("routeiq_config_reloads", "Config reloads by result", ["result"], registry=r)
        self.config_info = Gauge(
            "routeiq_config_info", "The loaded config's version (value is always 1)", ["version"], registry=r
        )
        self.config_loaded_at = Gauge(
            "routeiq_config_last_reload_success_timestamp_seconds", "When the config last loaded", registry=r
        )
        self.degraded_mode = Gauge(
            "gateway_degraded_mode",
            "1 while a backing service is unreachable and the gateway serves from what it holds (postgres: keys "
            "from the cache; redis: limits per replica; cache: responses cached in this replica's memory)",
            ["service"],
            registry=r,
        )
        # gateway_circuit_breaker_state{dependency} / _transitions_total{dependency,to}: redis, postgres, s3
        self.breakers = BreakerMetrics(r, "gateway")
        self.dependency_breakers: dict[str, CircuitBreaker] = {}  # by dependency, as made (/health/dependencies)
        self.deployment_breaker_transitions = Counter(
            "routeiq_deployment_circuit_breaker_transitions",
            "Provider deployments' circuit breaker transitions by model group, deployment id and the state entered",
            ["model", "deployment_id", "to"],
            registry=r,
        )
        self.virtual_key_cache = Gauge("routeiq_virtual_keys_cached", "Virtual keys in the in-memory cache", registry=r)
        self.key_lookups = Counter(
            "routeiq_virtual_key_lookups",
            "Lookups of keys not in the cache, by result (found, unknown, error, throttled)",
            ["result"],
            registry=r,
        )
        self.spend_flushes = Counter(
            "routeiq_spend_flushes", "Batched spend writes to PostgreSQL by result (ok, error)", ["result"], registry=r
        )
        self.rate_limited = Counter(
            "routeiq_rate_limited",
            "Requests refused with 429 by a virtual key's or team's limit (admission/limits.py)",
            ["scope", "limit"],  # key | team; rpm | tpm | parallel | budget
            registry=r,
        )
        self.auth_disabled = Gauge(
            "routeiq_auth_disabled", "1 when no master key is configured: the API answers anyone", registry=r
        )
        self.router_decisions = Counter(
            "routeiq_router_decisions",
            'Router choices by router, arm ("" without arms), chosen model group and reason (model/strategy, or '
            "why the fallback answered)",
            ["router", "arm", "model", "reason"],
            registry=r,
        )
        self.router_decision_seconds = Histogram(
            "routeiq_router_decision_seconds",
            "Time to decide a routed request's model, by router strategy",
            ["strategy"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.records = Counter(
            "routeiq_records", "Routing records kept in the spool, by type (route, feedback)", ["type"], registry=r
        )
        self.records_dropped = Counter(
            "routeiq_records_dropped",
            "Routing records not kept, by reason (spool_full, write_error)",
            ["reason"],
            registry=r,
        )
        self.records_shipped = Counter(
            "routeiq_records_shipped_objects", "Spool segments shipped to the records store", registry=r
        )
        self.records_ship_failures = Counter(
            "routeiq_records_ship_failures",
            "Failed attempts to ship a spool segment, by reason (store_unavailable, missing, read_error, ...)",
            ["reason"],
            registry=r,
        )
        self.records_spool_bytes = Gauge(
            "routeiq_records_spool_bytes", "Bytes of routing records in the local spool, not shipped yet", registry=r
        )
        self.records_last_shipped = Gauge(
            "routeiq_records_last_shipped_timestamp_seconds", "When a spool segment was last shipped", registry=r
        )
        self.feedback = Counter(
            "routeiq_feedback",
            "POST /v1/feedback calls by result (recorded, unknown, expired, invalid, disabled, dropped)",
            ["result"],
            registry=r,
        )
        self.cache_requests = Counter(
            "routeiq_cache_requests",
            "Requests the response cache took part in, by model, result (hit, miss) and store (redis, local)",
            ["model", "result", "store"],
            registry=r,
        )
        self.cache_writes = Counter(
            "routeiq_cache_writes", "Answers offered to the cache, by store and result (stored, too_large)",
            ["store", "result"], registry=r,
        )  # fmt: skip
        self.cache_redis_errors = Counter(
            "routeiq_cache_redis_errors", "Cache calls to Redis that failed or timed out (each a miss)", ["error"],
            registry=r,
        )  # fmt: skip
        self.cache_local_entries = Gauge("routeiq_cache_local_entries", "Entries in the in-memory LRU", registry=r)
        self.cache_local_bytes = Gauge("routeiq_cache_local_bytes", "Bytes of answers in the in-memory LRU", registry=r)
        self.in_flight = Gauge("routeiq_in_flight_requests", "Requests being served", registry=r)
        self.active_streams = Gauge("active_streams_count", "Streaming responses in progress", registry=r)
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}
        self._upstream_children: dict[tuple[str, str], Histogram] = {}

    def breaker(
        self,
        dependency: str,
        policy: Callable[[], BreakerPolicy],
        log: logging.Logger,
        degraded: Callable[[bool, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> CircuitBreaker:
        """The dependency's breaker; with `degraded`, gateway_degraded_mode{service=dependency} follows it (1 from
        the moment it leaves closed until it is closed again) and `degraded(flag, reason)` logs each flip."""

        def follow(dep: str, old: BreakerState, new: BreakerState, reason: str) -> None:
            if degraded is None or (old is not BreakerState.CLOSED and new is not BreakerState.CLOSED):
                return  # open <-> half-open: still degraded, said once already
            flag = new is not BreakerState.CLOSED
            self.degraded_mode.labels(dep).set(1 if flag else 0)
            degraded(flag, reason)

        if degraded is not None:
            self.degraded_mode.labels(dependency).set(0)
        breaker = self.breakers.breaker(dependency, policy, log, follow, clock)
        self.dependency_breakers[dependency] = breaker
        return breaker

    def bind_deployment_breakers(self, states: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        """routeiq_deployment_circuit_breaker_state{model,deployment_id}, read at scrape: (model, id, state)."""
        self.registry.register(_DeploymentBreakers(states))

    def bind_gauges(self, in_flight: Callable[[], float], streams: Callable[[], float]) -> None:
        self.in_flight.set_function(in_flight)
        self.active_streams.set_function(streams)

    def set_config_version(self, version: str, loaded_at: float) -> None:
        self.config_info.clear()
        self.config_info.labels(version).set(1)
        self.config_loaded_at.set(loaded_at)

    def observe_request(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        key = (model, endpoint, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(model, endpoint, str(status))
        child.inc()
        hist = self._latency_children.get(model)
        if hist is None:
            hist = self._latency_children[model] = self.latency.labels(model)
        hist.observe(seconds)

    def observe_upstream(self, model: str, path: str, seconds: float) -> None:
        key = (model, path)
        hist = self._upstream_children.get(key)
        if hist is None:
            hist = self._upstream_children[key] = self.upstream_latency.labels(model, path)
        hist.observe(seconds)

    def observe_usage(self, model: str, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and prompt:
            self.tokens.labels(model, "in").inc(prompt)
        if isinstance(completion, int) and completion:
            self.tokens.labels(model, "out").inc(completion)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _DeploymentBreakers(Collector):
    def __init__(self, states: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        self.states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "routeiq_deployment_circuit_breaker_state",
            "Provider deployment's circuit breaker: 0 closed, 1 open, 2 half-open (deployment_id: stable digest of "
            "model_name, model and api_base)",
            labels=["model", "deployment_id"],
        )
        for model, dep_id, state in self.states():
            family.add_metric([model, dep_id], state)
        yield family
