"""One request's cache controls, as LiteLLM's proxy takes them: the body's `cache` object (removed from the body
before it goes upstream) and the `Cache-Control: s-maxage=N` header, which LiteLLM reads as the entry's ttl.

    {"no-cache": true}   do not answer from the cache (the answer is still stored)
    {"no-store": true}   do not store this answer
    {"ttl": N}           keep this answer N seconds (at most routeiq.cache.max_ttl_seconds)
    {"s-maxage": N}      answer only from an entry at most N seconds old ("s-max-age" too)
    {"use-cache": true}  with cache_params.mode default_off: use the cache for this request
    {"namespace": "x"}   look up and store under this namespace instead of cache_params.namespace
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from routeiq_gateway.http.errors import bad_request

from .policy import CachePolicy

_FLAGS = ("no-cache", "no-store", "use-cache")
_SECONDS = ("ttl", "s-maxage", "s-max-age")
_KNOWN = (*_FLAGS, *_SECONDS, "namespace")
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_S_MAXAGE = re.compile(rb"(?:^|[,\s])s-maxage\s*=\s*(\d{1,10})(?:$|[,\s])")


@dataclass(frozen=True, slots=True)
class Controls:
    no_cache: bool = False
    no_store: bool = False
    use_cache: bool = False
    ttl: float | None = None
    max_age: float | None = None
    namespace: str | None = None


NONE = Controls()


def take_controls(body: dict[str, Any], cache_control: bytes | None) -> Controls:
    """The request's controls; `cache` is popped from the body whatever the config says (it is not a provider
    parameter). 400 naming the field for a control that is not what LiteLLM documents."""
    raw = body.pop("cache", None)
    ttl = _header_ttl(cache_control)
    if raw is None:
        return NONE if ttl is None else Controls(ttl=ttl)
    if not isinstance(raw, dict):
        raise bad_request(
            "'cache' must be an object of cache controls (no-cache, no-store, ttl, s-maxage, …).", "cache"
        )
    for name, value in raw.items():
        if name not in _KNOWN:
            raise bad_request(f"'cache.{name}' is not a cache control (one of: {', '.join(_KNOWN)}).", f"cache.{name}")
        if name in _FLAGS and not isinstance(value, bool):
            raise bad_request(f"'cache.{name}' must be a boolean.", f"cache.{name}")
        if name in _SECONDS and not _seconds(value):
            raise bad_request(f"'cache.{name}' must be a positive number of seconds.", f"cache.{name}")
    namespace = raw.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace)):
        raise bad_request("'cache.namespace' must be 1-64 letters, digits or ._:- characters.", "cache.namespace")
    max_age = raw.get("s-maxage", raw.get("s-max-age"))
    return Controls(
        no_cache=raw.get("no-cache", False),
        no_store=raw.get("no-store", False),
        use_cache=raw.get("use-cache", False),
        ttl=float(raw["ttl"]) if "ttl" in raw else ttl,
        max_age=float(max_age) if max_age is not None else None,
        namespace=namespace,
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """What the cache does for one request: look up (unless no-cache), store (unless no-store)."""

    read: bool
    write: bool
    ttl: float
    max_age: float | None
    namespace: str


def plan_for(policy: CachePolicy, endpoint: str, controls: Controls) -> Plan | None:
    """None: the cache has no part in this request (no `x-routeiq-cache` header)."""
    if not policy.enabled or endpoint not in policy.endpoints:
        return None
    if not policy.default_on and not controls.use_cache:
        return None
    if controls.no_cache and controls.no_store:
        return None
    ttl = controls.ttl if controls.ttl is not None else policy.ttl
    if ttl > policy.max_ttl:
        raise bad_request(f"'cache.ttl' is above this gateway's limit of {policy.max_ttl:g} seconds.", "cache.ttl")
    namespace = controls.namespace if controls.namespace is not None else policy.namespace
    return Plan(not controls.no_cache, not controls.no_store, ttl, controls.max_age, namespace)


def _seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and math.isfinite(value)


def _header_ttl(value: bytes | None) -> float | None:
    if not value:
        return None
    match = _S_MAXAGE.search(value.lower())
    return float(match.group(1)) if match and int(match.group(1)) > 0 else None
