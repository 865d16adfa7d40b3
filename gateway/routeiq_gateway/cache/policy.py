"""What the config asks of the response cache, built once per config load and never changed."""

from __future__ import annotations

from dataclasses import dataclass

from routeiq_shared.config_schema import CacheSettings, LiteLLMSettings


@dataclass(frozen=True, slots=True)
class CachePolicy:
    enabled: bool = False
    store: str = "redis"  # redis (REDIS_URL, the LRU while unset or down) | local (the LRU only)
    default_on: bool = True  # mode default_off: only requests that send `cache: {"use-cache": true}`
    ttl: float = 600.0
    namespace: str = ""
    endpoints: frozenset[str] = frozenset()
    redis_timeout: float = 0.1
    max_connections: int = 64
    max_entry_bytes: int = 1024 * 1024
    max_ttl: float = 7 * 86400.0
    local_max_entries: int = 10_000
    local_max_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_config(cls, litellm: LiteLLMSettings, bounds: CacheSettings) -> CachePolicy:
        params = litellm.cache_params
        return cls(
            enabled=litellm.cache and bool(params.supported_call_types),
            store=params.type,
            default_on=params.mode == "default_on",
            ttl=params.effective_ttl,
            namespace=params.namespace or "",
            endpoints=params.endpoints,
            redis_timeout=params.socket_timeout,
            max_connections=params.max_connections,
            max_entry_bytes=bounds.max_entry_bytes,
            max_ttl=bounds.max_ttl_seconds,
            local_max_entries=bounds.local_max_entries,
            local_max_bytes=bounds.local_max_bytes,
        )

    @property
    def uses_redis(self) -> bool:
        return self.enabled and self.store == "redis"
