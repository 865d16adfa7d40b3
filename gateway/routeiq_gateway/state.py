"""The gateway's serving state: built whole from a validated config, never mutated, swapped by reference.

A request reads `ref.current` once and keeps that object to the end, so a reload mid-request cannot mix configs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from routeiq_shared.breaker import BreakerPolicy
from routeiq_shared.config_schema import (
    AuditSettings,
    BreakersSettings,
    ConfigError,
    KeysSettings,
    LimitsSettings,
    LoadedConfig,
    OidcSettings,
    RecordsSettings,
    RouterSpec,
    content_version,
    load_config,
)

from routeiq_gateway.cache.policy import CachePolicy
from routeiq_gateway.dispatch.precall import with_context_windows
from routeiq_gateway.providers.tls_check import check_ca_bundle
from routeiq_gateway.records.request_ids import RequestIds
from routeiq_gateway.routing.deployments import Deployment, build_deployment
from routeiq_gateway.routing.routers import RouterPlan, build_plan
from routeiq_gateway.routing.wildcards import WildcardGroups, is_wildcard

log = logging.getLogger("routeiq.gateway")


@dataclass(frozen=True, slots=True)
class GatewayState:
    version: str
    groups: dict[str, tuple[Deployment, ...]]
    fallbacks: dict[str, tuple[str, ...]]
    master_key: bytes | None
    num_retries: int
    retry_backoff: float
    max_in_flight: int
    max_body_bytes: int
    drain_timeout: float
    access_log: bool
    models_payload: bytes
    uses_litellm: bool
    routers: dict[str, RouterSpec]  # virtual model name → its router
    egress_allowed_networks: tuple[str, ...] = ()  # routeiq.egress.allowed_networks, raw CIDR strings
    routing_strategy: str = "simple-shuffle"  # router_settings.routing_strategy: deployment order in a group
    # Whether requests record latency/in-flight/usage into the RuntimeState: only when something reads them.
    measure: bool = False
    router_plans: dict[str, RouterPlan] = field(default_factory=dict)  # virtual model name → its plan
    records: RecordsSettings = field(default_factory=RecordsSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    oidc: OidcSettings | None = None  # routeiq.admin.oidc: admin identity by JWT besides ADMIN_API_KEYS
    keys: KeysSettings = field(default_factory=KeysSettings)  # virtual keys' cache and spend (tenancy/)
    limits: LimitsSettings = field(default_factory=LimitsSettings)  # virtual keys' rpm/tpm/… (admission/limits.py)
    request_ids: RequestIds = field(default_factory=lambda: RequestIds.for_master_key(None))
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)  # group → llm_candidates.json prices
    allowed_fails: int = 3  # router_settings.allowed_fails: failures in a minute before a deployment cools down
    cooldown_seconds: float = 5.0  # router_settings.cooldown_time; 0 with disable_cooldowns
    pre_call_checks: bool = False  # router_settings.enable_pre_call_checks (dispatch/precall.py)
    wildcards: WildcardGroups = field(default_factory=lambda: WildcardGroups(()))  # `openai/*`, `*`, …
    config_warnings: tuple[str, ...] = ()  # LiteLLM keys accepted with no effect, logged at each load
    secret_files: tuple[str, ...] = ()  # os.file/ paths read at this load: the reload's log names them
    environment: dict[str, str] = field(default_factory=dict)  # the config's environment_variables
    # routeiq.breakers: each dependency's circuit breaker policy (routeiq_shared/breaker.py), built once per load
    breaker_policies: dict[str, BreakerPolicy] = field(default_factory=lambda: BreakersSettings().policies())
    deployment_latency_budget: float | None = None  # a provider call slower than this counts as a failure
    cache: CachePolicy = field(default_factory=CachePolicy)  # litellm_settings.cache (cache/)
    aliases: dict[str, str] = field(default_factory=dict)  # model_group_alias: alias → its group

    @property
    def router_artifacts(self) -> set[str]:
        return {artifact for spec in self.routers.values() for artifact, _ in spec.artifacts}

    def group(self, name: str) -> tuple[Deployment, ...] | None:
        """The deployments serving a model name: its group, or the group a wildcard pattern makes for it."""
        deps = self.groups.get(name)
        if deps is None and self.wildcards:
            hit = self.wildcards.resolve(name)
            if hit is not None:
                return hit[1]
        return deps

    def metric_model(self, name: str) -> str:
        """The model label for a served name: a wildcard request is labelled with its pattern (bounded)."""
        if name in self.groups or not self.wildcards:
            return name
        hit = self.wildcards.resolve(name)
        return hit[0].name if hit is not None else name

    @property
    def configured_deployments(self) -> list[Deployment]:
        """Every deployment of the config, wildcard templates included (what the upstream side keeps warm)."""
        deps = [d for group in self.groups.values() for d in group]
        return deps + [d for pattern in self.wildcards.patterns for d in pattern.templates]

    @property
    def deployment_ids(self) -> set[str]:
        return {d.id for group in self.groups.values() for d in group}

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(self.groups)


def build_state(loaded: LoadedConfig, created: int) -> GatewayState:
    cfg = loaded.config
    groups: dict[str, list[Deployment]] = {}
    infos: dict[str, list[dict[str, Any]]] = {}
    for i, entry in enumerate(cfg.model_list):
        check_ca_bundle(entry.litellm_params.ssl_verify, f"model_list[{i}].litellm_params.ssl_verify")
        groups.setdefault(entry.model_name, []).append(build_deployment(entry, cfg.router_settings))
        infos.setdefault(entry.model_name, []).append(entry.model_info)
    if cfg.router_settings.enable_pre_call_checks:  # context windows looked up once per load (imports LiteLLM)
        groups = {name: with_context_windows(deps, infos[name]) for name, deps in groups.items()}
    fallbacks = {k: tuple(v) for entry in cfg.router_settings.fallbacks for k, v in entry.items()}
    routers = {spec.name: spec for spec in cfg.routeiq.routers}
    wildcards = WildcardGroups((name, tuple(deps)) for name, deps in groups.items() if is_wildcard(name))
    for pattern in wildcards.patterns:
        del groups[pattern.name]
    listed = [*groups, *routers]
    aliases = {}
    for alias, to in cfg.router_settings.model_group_alias.items():  # another name for the same deployments
        target, hidden = (to, False) if isinstance(to, str) else (to.model, to.hidden)
        groups[alias] = groups[target]
        aliases[alias] = target
        if not hidden:
            listed.append(alias)
    models = [{"id": name, "object": "model", "created": created, "owned_by": "routeiq"} for name in listed]
    key = cfg.general_settings.master_key
    return GatewayState(
        version=loaded.version,
        groups={k: tuple(v) for k, v in groups.items()},
        fallbacks=fallbacks,
        master_key=key.encode() if key else None,
        num_retries=cfg.router_settings.num_retries,
        retry_backoff=cfg.router_settings.retry_after,
        max_in_flight=cfg.routeiq.limits.max_in_flight,
        max_body_bytes=cfg.routeiq.limits.max_request_body_bytes,
        drain_timeout=cfg.routeiq.server.drain_timeout_seconds,
        access_log=cfg.routeiq.server.access_log,
        models_payload=orjson.dumps({"object": "list", "data": models}),
        uses_litellm=any(
            not d.native for group in (*groups.values(), *(p.templates for p in wildcards.patterns)) for d in group
        ),
        routers=routers,
        egress_allowed_networks=tuple(cfg.routeiq.egress.allowed_networks),
        routing_strategy=cfg.router_settings.routing_strategy,
        measure=cfg.router_settings.routing_strategy != "simple-shuffle"
        or any(
            "latency" in (arm.effective_strategy, arm.fallback)
            for spec in routers.values()
            for arm in (spec.arm_specs() or [spec])
        ),
        router_plans={name: build_plan(spec, loaded.candidates) for name, spec in routers.items()},
        records=cfg.routeiq.records,
        audit=cfg.routeiq.audit,
        oidc=cfg.routeiq.admin.oidc,
        keys=cfg.routeiq.keys,
        limits=cfg.routeiq.limits,
        request_ids=RequestIds.for_master_key(key.encode() if key else None),
        prices={name: (c.input_price, c.output_price) for name, c in loaded.candidates.items()},
        allowed_fails=cfg.router_settings.allowed_fails,
        cooldown_seconds=0.0 if cfg.router_settings.disable_cooldowns else cfg.router_settings.cooldown_time,
        wildcards=wildcards,
        pre_call_checks=cfg.router_settings.enable_pre_call_checks,
        config_warnings=loaded.warnings,
        secret_files=loaded.secret_files,
        environment=dict(cfg.environment_variables),
        breaker_policies=cfg.routeiq.breakers.policies(),
        deployment_latency_budget=cfg.routeiq.breakers.deployment_latency_budget_seconds,
        cache=CachePolicy.from_config(cfg.litellm_settings, cfg.routeiq.cache),
        aliases=aliases,
    )


def read_config_files(config_path: Path, candidates_path: Path | None) -> tuple[bytes, bytes | None]:
    config_raw = config_path.read_bytes()
    candidates_raw = candidates_path.read_bytes() if candidates_path and candidates_path.exists() else None
    return config_raw, candidates_raw


def load_state_from_files(config_path: Path, candidates_path: Path | None, created: int) -> GatewayState:
    """Read and validate both files; raises ConfigError (with the key's path, and the refused files' version for
    the status config-sync reads back) or OSError."""
    config_raw, candidates_raw = read_config_files(config_path, candidates_path)
    try:
        state = build_state(load_config(config_raw, candidates_raw), created)
    except ConfigError as exc:
        exc.version = content_version(config_raw, candidates_raw or b"")
        raise
    # LiteLLM's environment_variables: providers' SDKs read some settings from the environment, so they are set
    # for the process, as LiteLLM's proxy does (a variable dropped from the file keeps its last value).
    os.environ.update(state.environment)
    for warning in state.config_warnings:
        log.warning("Config key has no effect", extra={"event": "config_warning", "detail": warning})
    return state


@dataclass(slots=True)
class StateRef:
    """The one mutable cell: which state serves new requests."""

    current: GatewayState
