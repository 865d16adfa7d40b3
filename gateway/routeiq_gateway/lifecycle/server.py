"""Start-up and the process's life: load config, open the upstream pool, bind, and answer signals.

SIGHUP → reload.py. SIGTERM (and a first Ctrl-C) → drain.py; a second Ctrl-C stops at once. uvicorn's own signal
handling is switched off, because it would close the listener before in-flight work finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from routeiq_shared.atomic import atomic_write
from routeiq_shared.breaker import BreakerState
from routeiq_shared.config_schema import ConfigError
from routeiq_shared.egress import EgressPolicy
from routeiq_shared.gateway_files import IDENTITY_FILE, GatewayIdentity
from routeiq_shared.redis_settings import RedisSettings

from routeiq_gateway.admin.app import AdminApp
from routeiq_gateway.admin.audit_endpoints import AuditEndpoints
from routeiq_gateway.admin.endpoints import AdminEndpoints
from routeiq_gateway.admin.oidc import OidcAuthenticator
from routeiq_gateway.admin.principals import AdminAuth
from routeiq_gateway.admin.tenancy_endpoints import TenancyEndpoints
from routeiq_gateway.admin.ui import AdminUI
from routeiq_gateway.admin.ui_session import SessionAuthenticator, Sessions
from routeiq_gateway.app import GatewayApp
from routeiq_gateway.audit.metrics import AuditMetrics
from routeiq_gateway.audit.shipping import AuditTarget
from routeiq_gateway.audit.table_sink import TableSink
from routeiq_gateway.audit.trail import AuditTrail, SpoolSink, pending_records
from routeiq_gateway.cache.store import ResponseCache
from routeiq_gateway.dispatch.dispatcher import Dispatcher
from routeiq_gateway.http.limits import EdgeLimits
from routeiq_gateway.http.protocol import BoundedHttpToolsProtocol
from routeiq_gateway.lifecycle.dependency_health import DependencyHealth
from routeiq_gateway.lifecycle.drain import drain
from routeiq_gateway.lifecycle.reload import Reloader
from routeiq_gateway.lifecycle.status_report import StatusReport
from routeiq_gateway.observability.metrics import GatewayMetrics
from routeiq_gateway.providers.egress_setup import egress_policy, upstream_side_reloaded
from routeiq_gateway.providers.http1 import Pool
from routeiq_gateway.providers.native import NativeProvider
from routeiq_gateway.providers.upstream_settings import UpstreamSettings
from routeiq_gateway.records.recorder import Recorder
from routeiq_gateway.records.shipper import Shipper
from routeiq_gateway.records.spool import open_spool
from routeiq_gateway.routing.model_watch import ModelMetrics, ModelsRef, ModelWatcher
from routeiq_gateway.routing.router_models import VerifyPolicy
from routeiq_gateway.routing.runtime import RuntimeState
from routeiq_gateway.state import GatewayState, StateRef, load_state_from_files
from routeiq_gateway.tenancy.database import DatabaseSettings
from routeiq_gateway.tenancy.service import StartupError, Tenancy

log = logging.getLogger("routeiq.gateway")

RECORDS_DRAIN_SECONDS = 5.0  # after the requests' drain: what the spool may take to ship before exit


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    config_path: Path
    candidates_path: Path
    host: str
    port: int
    run_dir: Path
    models_dir: Path
    admin_keys: tuple[bytes, ...]
    verify: VerifyPolicy
    admin_port: int = 4001  # the admin API's own listener (admin/app.py); 0: none
    database: DatabaseSettings | None = None  # DATABASE_URL: virtual keys on (tenancy/)
    redis: RedisSettings | None = None  # REDIS_URL / Sentinel / Cluster: limits, key changes, the response cache


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are ours: see serve()


def _litellm_provider(policy: EgressPolicy) -> Any:
    from routeiq_gateway.providers.litellm_client import LiteLLMProvider

    provider = LiteLLMProvider(policy)
    # LiteLLM's modules add ~280,000 objects that live as long as the process; every full collection walked
    # them all (135 ms measured, a p99 of 60-80 ms on the translation path). Frozen, collections skip them.
    gc.collect()
    gc.freeze()
    return provider


def _translated_provider(pool: Pool, litellm: Any) -> Any:
    from routeiq_gateway.providers.translated import TranslatedProvider

    return TranslatedProvider(pool, litellm)


async def serve(opts: GatewayOptions, tracer_provider: TracerProvider | None = None) -> int:
    try:  # process settings first: they do not depend on config
        upstream = UpstreamSettings.from_env()
    except ValueError as exc:
        log.error("Cannot start: upstream settings are invalid", extra={"event": "startup_failed", "reason": str(exc)})
        return 2
    try:
        state = await asyncio.to_thread(load_state_from_files, opts.config_path, opts.candidates_path, int(time.time()))
    except (ConfigError, OSError) as exc:
        log.error(
            "Cannot start: config is not loadable",
            extra={"event": "startup_failed", "reason": str(exc), "key_path": getattr(exc, "path", None)},
        )
        StatusReport(opts.run_dir).refused(None, "start", exc)
        return 2
    try:
        limits = EdgeLimits.from_env()
    except ValueError as exc:
        log.error("Cannot start: edge limits are invalid", extra={"event": "startup_failed", "reason": str(exc)})
        return 2
    try:
        policy = egress_policy(state)
    except ValueError as exc:
        log.error("Cannot start: egress allow-list is invalid", extra={"event": "startup_failed", "reason": str(exc)})
        return 2
    metrics = GatewayMetrics()
    metrics.set_config_version(state.version, time.time())
    report = StatusReport(opts.run_dir, metrics)
    pool = Pool(policy, upstream)
    native = NativeProvider(pool)
    litellm = await asyncio.to_thread(_litellm_provider, policy) if state.uses_litellm else None
    # The process's: outlives every reload (routing/runtime.py); its deployment breakers' transitions counted.
    runtime = RuntimeState(on_change=lambda dep_id, old, new, reason: _breaker_moved(metrics, runtime, dep_id, new))
    runtime.describe(_deployment_groups(state))
    metrics.bind_deployment_breakers(
        lambda: ((group, dep_id, int(runtime.breaker(dep_id))) for dep_id, group in runtime.names.items())
    )
    # Outlives reloads too; each config sets its policy. Its breaker follows routeiq.breakers.redis.
    cache = ResponseCache(opts.redis, metrics, lambda: ref.current.breaker_policies["redis"])
    cache.configure(state.cache)
    translated = _translated_provider(pool, litellm) if litellm is not None else None
    dispatcher = Dispatcher(native, litellm, metrics, runtime, translated)

    def prepare(new: GatewayState) -> None:
        if new.uses_litellm and dispatcher.litellm is None:
            dispatcher.litellm = _litellm_provider(pool.policy)  # after_swap sets the new one
            dispatcher.translated = _translated_provider(pool, dispatcher.litellm)

    ref = StateRef(state)
    audit_spool = open_spool(
        opts.run_dir / "audit", state.audit.spool_max_bytes, fsync=True, what="audit record", event="audit"
    )
    audit_metrics = AuditMetrics(metrics.registry)
    audit_metrics.pending.set_function(lambda: pending_records(audit_spool))
    audit = AuditTrail(lambda: ref.current.audit, audit_metrics, [SpoolSink(audit_spool, lambda: ref.current.audit)])
    # One S3 breaker for both shippers: what one learns about the store, the other need not find out again.
    s3_breaker = metrics.breaker("s3", lambda: ref.current.breaker_policies["s3"], log, _s3_degraded)
    audit_shipper = Shipper(
        audit_spool,
        metrics,
        lambda: ref.current.audit,
        target=AuditTarget(lambda: ref.current.audit),
        counters=audit_metrics.ship_counters(),
        breaker=s3_breaker,
    )
    models = ModelsRef()
    watcher = ModelWatcher(
        opts.models_dir,
        opts.verify,
        models,
        ModelMetrics(metrics.registry),
        lambda: ref.current.router_artifacts,
        audit,
    )

    async def after_swap() -> None:
        upstream_side_reloaded(ref.current, pool, native, dispatcher.litellm)
        reloaded = getattr(dispatcher.translated, "reloaded", None)
        if reloaded is not None:  # the translation path's prepared heads hold API keys of deployments maybe gone
            reloaded()
        runtime.forget_except(ref.current.deployment_ids)
        runtime.describe(_deployment_groups(ref.current))
        cache.configure(ref.current.cache)
        await watcher.load_wanted()

    reloader = Reloader(ref, opts.config_path, opts.candidates_path, metrics, prepare, after_swap, report, audit)
    spool = open_spool(opts.run_dir / "records", state.records.spool_max_bytes)
    shipper = Shipper(spool, metrics, lambda: ref.current.records, breaker=s3_breaker)
    try:
        tenancy = await _open_tenancy(opts, ref, metrics)
    except StartupError as exc:
        log.error("Cannot start: virtual keys unavailable", extra={"event": "startup_failed", "reason": str(exc)})
        pool.close()
        return 2
    dependencies = DependencyHealth(
        opts.config_path, opts.models_dir, opts.run_dir, metrics.dependency_breakers, runtime
    )
    app = GatewayApp(
        ref,
        dispatcher,
        metrics,
        models,
        Recorder(spool, metrics),
        tenancy=tenancy,
        dependencies=dependencies,
        cache=cache,
    )
    audit_table = (
        TableSink(tenancy.db, lambda: ref.current.audit, audit_metrics, breaker=tenancy.cache.breaker)
        if tenancy is not None
        else None
    )
    if audit_table is not None:
        audit.add_sink(audit_table)  # audit records searchable in PostgreSQL too
    sessions = Sessions()  # the admin page's logins
    admin_auth = AdminAuth(
        opts.admin_keys, [OidcAuthenticator(lambda: ref.current.oidc), SessionAuthenticator(sessions)]
    )
    tenancy_endpoints = TenancyEndpoints(tenancy, audit)
    admin_app = AdminApp(
        admin_auth,
        AdminEndpoints(
            ref, models, reloader, lambda: {"draining": app.draining, "in_flight": app.inflight.requests}, audit
        ),
        tenancy_endpoints,
        AuditEndpoints(tenancy.db if tenancy is not None else None),
        AdminUI(admin_auth, sessions, tenancy_endpoints),
    )
    config = uvicorn.Config(
        app,
        host=opts.host,
        port=opts.port,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # clients' X-Forwarded-* are not trusted, and the middleware costs on every request
        backlog=4096,
        # Heads bounded in size, count and time; idle connections closed; open connections capped (protocol.py).
        http=BoundedHttpToolsProtocol.with_limits(limits),
        timeout_keep_alive=limits.keep_alive,
        # our drain has waited already (drain.py); uvicorn types this int but waits with it as a float
        timeout_graceful_shutdown=0.5,  # type: ignore[arg-type]
    )
    server = _Server(config)
    admin_server = _admin_server(opts, admin_app)
    _install_signals(server, app, reloader, admin_server)
    pidfile = opts.run_dir / "gateway.pid"
    # The identity first: config-sync signals the pidfile's pid only when this record says it is us.
    GatewayIdentity.of_this_process().write(opts.run_dir)
    atomic_write(pidfile, f"{os.getpid()}\n".encode())
    report.loaded(state, "start")
    # What start-up made (modules, the first config, the pools) lives as long as the process: frozen, the
    # collector stops walking it. Measured in bench/proxy_throughput.py: routeiq 6,000 -> 8,500 req/s (one run each,
    # quiet machine), routeiq-keys 3,700 -> 5,500 (its heap is larger: psycopg, the key cache, the limits).
    gc.collect()
    gc.freeze()
    log.info(
        "Gateway starting",
        extra={
            "event": "startup",
            "version": state.version,
            "host": opts.host,
            "port": opts.port,
            "admin_port": opts.admin_port or None,
            "model_groups": len(state.groups),
            "secret_files": list(state.secret_files),
        },
    )
    stop_watching = asyncio.Event()
    watching = asyncio.create_task(watcher.run(stop_watching))
    shipping = asyncio.create_task(shipper.run(stop_watching))
    shipping_audit = asyncio.create_task(audit_shipper.run(stop_watching))
    probing_cache = asyncio.create_task(cache.run(stop_watching))
    if tenancy is not None:
        tenancy.start(stop_watching)
    writing_audit = asyncio.create_task(audit_table.run(stop_watching)) if audit_table is not None else None
    admin_serving = asyncio.create_task(admin_server.serve()) if admin_server is not None else None
    try:
        await server.serve()
    finally:
        if admin_server is not None and admin_serving is not None:
            admin_server.should_exit = True
            await asyncio.wait({admin_serving}, timeout=5)
        stop_watching.set()
        await asyncio.wait(
            {watching, shipping, shipping_audit, probing_cache} | ({writing_audit} if writing_audit else set()),
            timeout=2,
        )
        await cache.close()
        if audit_table is not None:
            await audit_table.close(RECORDS_DRAIN_SECONDS)
        if tenancy is not None:
            await tenancy.close()  # the drain is over: the last spend is written
        await audit_shipper.drain(RECORDS_DRAIN_SECONDS)
        await audit_shipper.close()
        await shipper.drain(RECORDS_DRAIN_SECONDS)
        await shipper.close()
        pool.close()
        app.scoring.close()
        with contextlib.suppress(OSError):
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()
                (opts.run_dir / IDENTITY_FILE).unlink(missing_ok=True)
        if tracer_provider is not None:
            tracer_provider.shutdown()  # flush spans still queued for export
    return 0


def _s3_degraded(degraded: bool, reason: str) -> None:
    if degraded:
        log.error(
            "Object store unreachable: routing records and audit records kept in the spool until it answers",
            extra={"event": "degraded_mode", "service": "s3", "degraded": True, "reason": reason[:300]},
        )
    else:
        log.info(
            "Object store reachable again: shipping the spool",
            extra={"event": "degraded_mode", "service": "s3", "degraded": False},
        )


def _deployment_groups(state: GatewayState) -> dict[str, str]:
    """Deployment id → its model group, each deployment once (an alias group shares its target's)."""
    out: dict[str, str] = {}
    for group in state.groups.values():
        for dep in group:
            out.setdefault(dep.id, dep.model_name)
    return out


def _breaker_moved(metrics: GatewayMetrics, runtime: RuntimeState, dep_id: str, new: BreakerState) -> None:
    metrics.deployment_breaker_transitions.labels(runtime.names.get(dep_id, ""), dep_id, new.label).inc()


async def _open_tenancy(opts: GatewayOptions, ref: StateRef, metrics: GatewayMetrics) -> Tenancy | None:
    """Virtual keys with DATABASE_URL (None without: the master key alone); StartupError when they cannot start."""
    if opts.database is None:
        log.info(
            "Virtual keys off: DATABASE_URL is not set; the master key alone admits",
            extra={"event": "virtual_keys", "enabled": False},
        )
        return None
    tenancy = Tenancy(
        opts.database,
        lambda: ref.current.keys,
        metrics,
        opts.redis,
        lambda: ref.current.limits,
        lambda: ref.current.breaker_policies,
    )
    try:
        await tenancy.open()
    except StartupError:
        await tenancy.db.close()
        raise
    return tenancy


def _admin_server(opts: GatewayOptions, admin_app: AdminApp) -> _Server | None:
    if not opts.admin_port:
        return None
    config = uvicorn.Config(
        admin_app,
        host=opts.host,
        port=opts.admin_port,
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=1,
    )
    return _Server(config)


def _install_signals(server: _Server, app: GatewayApp, reloader: Reloader, admin: _Server | None) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coro: Coroutine[Any, Any, Any]) -> None:
        task = loop.create_task(coro)
        tasks.add(task)  # keep a reference until done, or the task may be collected mid-flight
        task.add_done_callback(tasks.discard)

    def stop() -> None:
        server.should_exit = True
        if admin is not None:
            admin.should_exit = True

    def on_term() -> None:
        spawn(drain(app, app.ref.current.drain_timeout, stop))

    def on_int() -> None:
        if app.draining:
            server.force_exit = server.should_exit = True
            if admin is not None:
                admin.force_exit = admin.should_exit = True
        else:
            on_term()

    loop.add_signal_handler(signal.SIGHUP, lambda: spawn(reloader.reload("SIGHUP")))
    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, on_int)
