"""The config contract: `config.yaml` (LiteLLM-compatible plus a `routeiq:` section) and `llm_candidates.json`.

Defined once, here, and run by both the gateway and config-sync, so a file the agent accepts is a file the gateway
loads. Unknown keys are errors that name the key's path: a typo must not silently change behaviour. The one open
mapping is `litellm_params`, whose extra keys are provider settings handed to LiteLLM as they are.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .bounded_yaml import YamlBoundError, safe_load_bounded
from .breaker import BreakerPolicy
from .egress import EgressError, check_url_literal, parse_networks
from .litellm_compat import adapt
from .secret_files import SECRET_DIRS_ENV, SecretFiles
from .secret_refs import SecretRefError, check_ref_syntax, is_secret_ref, resolve_refs

# An empty key (an empty Secret) would switch auth off; a very short one is guessable.
MIN_MASTER_KEY_LENGTH = 8
# litellm_params keys whose values LiteLLM or the native path send as (or inside) an HTTP header.
_HEADER_PARAMS = frozenset({"api_key", "organization", "api_version"})
_CREDENTIAL_PARAM = re.compile(r"(^|_)(key|token|secret|password)(_id)?$")
_HEADER_MAPS = ("extra_headers", "headers")


class ConfigError(ValueError):
    """A config or candidates file that must not be loaded. `path` names the offending key (`a.b[0].c`)."""

    def __init__(
        self, path: str, message: str, source: str = "config.yaml", more: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.path = path
        self.message = message
        self.source = source
        self.version: str | None = None  # the refused files' content version, when the loader read them whole
        # every problem found, the first being (path, message): a file is fixed in one round, not one per key
        self.problems: tuple[tuple[str, str], ...] = ((path, message), *more)
        where = f"{source}: {path}" if path else source
        text = f"{where}: {message}"
        if more:
            text += "".join(f"; {p}: {m}" if p else f"; {m}" for p, m in more)
        super().__init__(text)

    @classmethod
    def of(cls, problems: list[tuple[str, str]], source: str = "config.yaml") -> ConfigError:
        (path, message), *more = problems
        return cls(path, message, source, tuple(more))


class _NestedError(ValueError):
    """A model validator's error about one of the model's own keys: `loc` is appended to the model's path."""

    def __init__(self, loc: tuple[int | str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unresolved(value: object, info: ValidationInfo) -> bool:
    """An `os.environ/` or `os.file/` reference not resolved yet (the structural check): its value is checked once
    resolved."""
    resolved = bool(info.context and info.context.get("resolved"))
    return not resolved and is_secret_ref(value)


class LiteLLMParams(BaseModel):
    """Provider call settings. Extra keys (api_version, aws_region_name, …) pass through to LiteLLM."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    stream_timeout: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0)
    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    organization: str | None = None
    ssl_verify: bool | str | None = Field(
        default=None, description="TLS verification: true (default), false, or the path of a CA bundle (PEM)"
    )

    @field_validator("ssl_verify")
    @classmethod
    def _ssl_verify_is_a_path(cls, value: bool | str | None, info: ValidationInfo) -> bool | str | None:
        bad = isinstance(value, str) and (not value.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value))
        if bad and not _unresolved(value, info):
            raise ValueError("must be true, false or the path of a CA bundle (PEM)")
        return value

    @field_validator("api_base")
    @classmethod
    def _api_base_can_work(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or _unresolved(value, info):
            return value
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            # urlsplit silently drops CR/LF/TAB, so check_url_literal would pass a URL that injects into the request
            raise ValueError("contains a control character (CR, LF, NUL, …); not a URL that can be sent")
        try:
            check_url_literal(value)  # no DNS: the agent validates without resolving
        except EgressError as exc:
            raise ValueError(str(exc)) from None
        return value


class ModelEntry(_Strict):
    model_name: str = Field(min_length=1)
    litellm_params: LiteLLMParams
    model_info: dict[str, Any] = Field(default_factory=dict)


class GroupAlias(_Strict):
    model: str = Field(min_length=1)
    hidden: bool = Field(default=False, description="served, but not listed by /v1/models")


class RouterSettings(_Strict):
    routing_strategy: Literal[
        "simple-shuffle", "least-busy", "latency-based-routing", "cost-based-routing", "usage-based-routing"
    ] = Field(default="simple-shuffle", description="how a deployment is chosen within a model group")
    num_retries: int = Field(default=2, ge=0, le=10)
    timeout: float = Field(default=60.0, gt=0)
    stream_timeout: float | None = Field(default=None, gt=0)
    retry_after: float = Field(default=0.05, ge=0, description="base of the jittered backoff, seconds")
    fallbacks: list[dict[str, list[str]]] = Field(default_factory=list)
    allowed_fails: int = Field(
        default=3, ge=0, description="failures of a deployment in a minute before it cools down (LiteLLM's default)"
    )
    cooldown_time: float = Field(default=5.0, ge=0, description="seconds a failing deployment sits out")
    disable_cooldowns: bool = Field(default=False, description="never cool a failing deployment down")
    enable_pre_call_checks: bool = Field(
        default=False, description="skip deployments whose context window the request does not fit (400 if none)"
    )
    model_group_alias: dict[str, str | GroupAlias] = Field(
        default_factory=dict, description="another name for a model group: {alias: group} or {alias: {model, hidden}}"
    )


class GeneralSettings(_Strict):
    master_key: str | None = None

    @field_validator("master_key")
    @classmethod
    def _master_key_is_a_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or _unresolved(value, info):
            return value
        if len(value) < MIN_MASTER_KEY_LENGTH:
            raise ValueError(
                f"master key is empty or shorter than {MIN_MASTER_KEY_LENGTH} characters; an empty key would leave "
                "the API open (remove master_key to run without auth on purpose)"
            )
        return value


class LimitsSettings(_Strict):
    max_in_flight: int = Field(default=1024, ge=1, description="requests past this get 503 at once")
    max_request_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Virtual keys' rpm / tpm / max_parallel and budgets (gateway admission/limits.py), shared through REDIS_URL.
    replicas: int = Field(
        default=1,
        ge=1,
        description="gateway replicas sharing the limits: with Redis unreachable each enforces limit / replicas",
    )
    redis_timeout_seconds: float = Field(
        default=0.05, gt=0, le=5, description="longest a request waits on Redis for its limits; then local limits"
    )
    default_completion_tokens: int = Field(
        default=1024, ge=0, description="tpm reserved for the answer when the request sets no max_tokens"
    )
    slot_ttl_seconds: float = Field(
        default=900.0, gt=0, description="a max_parallel slot a crashed replica left behind expires after this"
    )
    lease_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="a busy key or team far from its limits takes allowance from Redis in chunks, held at most this "
        "long (gateway admission/leases.py); 0: every request asks Redis",
    )


class ServerSettings(_Strict):
    drain_timeout_seconds: float = Field(default=30.0, ge=0)
    access_log: bool = False


ARTIFACT_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
ARTIFACT_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


ROUTER_STRATEGIES = ("learned", "cost", "latency", "random", "custom")
# Strategies that answer without a model or code of their own: what `fallback` may name besides a model group.
FALLBACK_STRATEGIES = ("cost", "latency", "random")
IMPORT_PATH_PATTERN = (
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
)


ARM_FIELDS = ("strategy", "artifact", "model_version", "threshold", "weights", "import_path", "params")


class RouterArm(_Strict):
    """One arm of an A/B or canary split: a share of callers, served by the entry's router with this arm's own
    decision fields (any of ARM_FIELDS) in place of the entry's."""

    name: str = Field(min_length=1, description="the arm's name, in the x-routeiq-router-arm header and metrics")
    weight: float = Field(ge=0, description="relative share of callers; 0 drains the arm")
    strategy: Literal["learned", "cost", "latency", "random", "custom"] | None = None
    artifact: str | None = Field(default=None, pattern=ARTIFACT_NAME_PATTERN)
    model_version: str | None = Field(default=None, pattern=ARTIFACT_VERSION_PATTERN)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    weights: dict[str, float] | None = None
    import_path: str | None = Field(default=None, pattern=IMPORT_PATH_PATTERN)
    params: dict[str, Any] | None = None


class RouterSpec(_Strict):
    """A virtual model: requests for `name` are sent to one of `candidates` (cheapest first), chosen by
    `strategy`; `fallback` answers when the strategy cannot (model missing, failing, or a custom router raising)."""

    name: str = Field(min_length=1, description="the model name clients ask for, e.g. auto")
    strategy: Literal["learned", "cost", "latency", "random", "custom"] | None = Field(
        default=None, description="learned (the default with an artifact), cost, latency, random or custom"
    )
    artifact: str | None = Field(
        default=None, pattern=ARTIFACT_NAME_PATTERN, description="router model in the registry and volume"
    )
    model_version: str | None = Field(
        default=None, pattern=ARTIFACT_VERSION_PATTERN, description="pin: serve this artifact version, not CURRENT"
    )
    candidates: list[str] = Field(min_length=1, description="model groups the router may choose, cheapest first")
    default: str | None = Field(default=None, description="group used while no artifact is loaded")
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="strong model iff score >= threshold; default the artifact's"
    )
    weights: dict[str, float] | None = Field(default=None, description="random: candidate → relative weight")
    import_path: str | None = Field(
        default=None, pattern=IMPORT_PATH_PATTERN, description="custom: package.module:callable"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="custom: keyword arguments of its class")
    fallback: str | None = Field(
        default=None, description="a strategy (cost, latency, random) or a model group that answers instead"
    )
    arms: list[RouterArm] | None = Field(
        default=None, description="A/B or canary: a weighted, per-caller sticky split between router configurations"
    )

    @model_validator(mode="after")
    def _strategy_has_what_it_needs(self) -> RouterSpec:
        if self.arms is not None:
            self._check_arms(self.arms)
            return self
        strategy = self.effective_strategy
        if strategy == "learned" and self.artifact is None:
            raise ValueError("strategy learned needs an artifact (or name another strategy)")
        if strategy == "custom" and self.import_path is None:
            raise ValueError("strategy custom needs an import_path (package.module:callable)")
        if self.weights is not None:
            for name, weight in self.weights.items():
                if name not in self.candidates:
                    raise ValueError(f"weights names {name!r}, which is not one of the router's candidates")
                if weight < 0:
                    raise ValueError(f"weights[{name!r}] is negative")
            if not any(w > 0 for w in self.weights.values()):
                raise ValueError("weights must give at least one candidate a positive weight")
        return self

    def _check_arms(self, arms: list[RouterArm]) -> None:
        if len(arms) < 2:
            raise _NestedError(("arms",), "needs at least 2 arms (a router without a split needs no arms)")
        seen: set[str] = set()
        for i, arm in enumerate(arms):
            if arm.name in seen:
                raise _NestedError(("arms", i, "name"), f"{arm.name!r} is not unique among the arms")
            seen.add(arm.name)
        if not sum(arm.weight for arm in arms) > 0:
            raise _NestedError(("arms",), "at least one arm needs a positive weight")
        pins: dict[str, str | None] = {}
        for i, spec in enumerate(self.arm_specs()):
            if spec.artifact is None:
                continue
            # The models volume holds one version per artifact name: two versions are two artifact names.
            if spec.artifact in pins and pins[spec.artifact] != spec.model_version:
                raise _NestedError(
                    ("arms", i, "model_version"),
                    f"pins {spec.artifact} at another version than an earlier arm; "
                    "publish the versions under two artifact names to split between them",
                )
            pins[spec.artifact] = spec.model_version

    def arm_specs(self) -> list[RouterSpec]:
        """Each arm as a complete router (the entry with the arm's own fields in place), in arm order; raises
        an error naming the arm when one is not a valid router. Empty for a router without arms."""
        out: list[RouterSpec] = []
        base = self.model_dump(exclude={"arms"})
        for i, arm in enumerate(self.arms or ()):
            own = {f: getattr(arm, f) for f in ARM_FIELDS if getattr(arm, f) is not None}
            try:
                out.append(RouterSpec.model_validate({**base, **own}))
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                msg = str(err["ctx"]["error"]) if "error" in err.get("ctx", {}) else err["msg"]
                raise _NestedError(("arms", i, *err["loc"]), f"arm {arm.name!r}: {msg}") from None
        return out

    @property
    def artifacts(self) -> list[tuple[str, str | None]]:
        """(artifact, pinned version) of the router, or of each of its arms."""
        specs = self.arm_specs() if self.arms is not None else [self]
        return [(s.artifact, s.model_version) for s in specs if s.artifact is not None]

    @property
    def effective_strategy(self) -> str:
        if self.arms is not None:
            return "arms"
        if self.strategy is not None:
            return self.strategy
        if self.artifact is None:
            raise ValueError("a router needs a strategy, or an artifact (then strategy learned)")
        return "learned"

    @property
    def fallback_group(self) -> str:
        if self.fallback is not None and self.fallback not in FALLBACK_STRATEGIES:
            return self.fallback
        return self.default or self.candidates[0]


def _network(value: str) -> str:
    parse_networks([value])  # raises ValueError naming the entry
    if not value.strip():
        raise ValueError("empty network")
    return value


class EgressSettings(_Strict):
    allowed_networks: list[Annotated[str, AfterValidator(_network)]] = Field(
        default_factory=list, description="private networks (CIDR) upstreams may be in, e.g. in-cluster model servers"
    )


def _store_uri(value: str) -> str:
    from .objectstore import parse_store_uri

    parse_store_uri(value)  # raises ValueError naming the URI
    return value


class RecordsSettings(_Strict):
    """Routing records (routeiq_shared/routing_records.py): one per routed request, spooled on the run volume and
    shipped in batches to `<store>/records/YYYY/MM/DD/`; `POST /v1/feedback` is recorded beside them."""

    enabled: bool = Field(default=False, description="write a record for every request to a router")
    store: Annotated[str, AfterValidator(_store_uri)] | None = Field(
        default=None, description="s3://bucket/prefix/ or file:///dir/ to ship to; unset: records stay in the spool"
    )
    prompt: Literal["digest", "text", "none"] = Field(
        default="digest", description="what of the prompt a record keeps: its sha256, its text (to train on), nothing"
    )
    batch_records: int = Field(default=1000, ge=1, le=1_000_000, description="records per shipped object, at most")
    flush_seconds: float = Field(default=10.0, gt=0, le=3600, description="a segment is shipped at most this old")
    spool_max_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024 * 1024, description="past this the spool keeps no new record (counted)"
    )
    feedback_window_seconds: int = Field(
        default=7 * 86400, ge=60, description="how long after a request its feedback is accepted"
    )


# Asymmetric JWS algorithms only: `none` and HS* (which would let the JWKS's public key act as a shared secret)
# can never be configured.
OidcAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
AdminRole = Literal["viewer", "editor", "admin"]
ADMIN_ROLES: tuple[AdminRole, ...] = ("viewer", "editor", "admin")  # lowest first


def _default_algorithms() -> list[OidcAlgorithm]:
    return ["RS256", "ES256"]


def _issuer_url(value: str) -> str:
    try:
        check_url_literal(value)
    except EgressError as exc:
        raise ValueError(str(exc)) from None
    return value


class OidcSettings(_Strict):
    """Admin identity by OIDC JWT bearer tokens (gateway/routeiq_gateway/admin/oidc.py). Keys come from
    `jwks_file`, else `jwks_url`, else the issuer's discovery document (`<issuer>/.well-known/openid-configuration`)."""

    issuer: Annotated[str, AfterValidator(_issuer_url)] = Field(description="the `iss` tokens must carry")
    audience: str = Field(min_length=1, description="the `aud` tokens must carry (the gateway's client id)")
    jwks_url: Annotated[str, AfterValidator(_issuer_url)] | None = Field(
        default=None, description="the issuer's JWKS; unset: taken from the discovery document"
    )
    jwks_file: str | None = Field(default=None, description="a JWKS on the volume instead of a URL (air-gapped)")
    algorithms: list[OidcAlgorithm] = Field(
        default_factory=_default_algorithms, min_length=1, description="accepted signature algorithms"
    )
    role_claim: str = Field(
        default="groups", min_length=1, description="claim holding the caller's groups/roles; dotted path allowed"
    )
    role_map: dict[str, AdminRole] = Field(
        default_factory=dict, description="claim value -> role; the highest role of a token's values wins"
    )
    leeway_seconds: float = Field(default=30.0, ge=0, le=300, description="clock skew allowed on exp/nbf/iat")
    jwks_cache_seconds: float = Field(default=3600.0, ge=60, description="keys are refetched when older than this")
    jwks_min_refresh_seconds: float = Field(
        default=30.0, ge=0, description="an unknown kid refetches the keys at most this often"
    )


class AdminSettings(_Strict):
    oidc: OidcSettings | None = None


class AuditSettings(_Strict):
    """The audit trail (gateway/routeiq_gateway/audit/): one record per admin action, config reload and model
    change, spooled (append + fsync) and shipped in batches to `<store>/audit/YYYY/MM/DD/`."""

    enabled: bool = Field(default=True, description="write audit records (to the spool; shipped when store is set)")
    store: Annotated[str, AfterValidator(_store_uri)] | None = Field(
        default=None, description="s3://bucket/prefix/ or file:///dir/ to ship to; unset: records stay in the spool"
    )
    batch_records: int = Field(default=100, ge=1, le=100_000, description="records per shipped object, at most")
    flush_seconds: float = Field(default=10.0, gt=0, le=3600, description="a record is shipped at most this late")
    sse: Literal["AES256", "aws:kms"] = Field(default="AES256", description="S3 server-side encryption")
    kms_key_id: str | None = Field(default=None, min_length=1, description="the KMS key, with sse: aws:kms")
    retention_days: int | None = Field(
        default=None, ge=1, le=36500, description="S3 Object Lock retention per object (the bucket must have it)"
    )
    retention_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "COMPLIANCE"
    spool_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024, description="past this, records drop")
    table_flush_seconds: float = Field(
        default=1.0, gt=0, le=60, description="with DATABASE_URL: records reach the search table this late at most"
    )

    @model_validator(mode="after")
    def _kms_key_needs_kms(self) -> AuditSettings:
        if self.kms_key_id is not None and self.sse != "aws:kms":
            raise _NestedError(("kms_key_id",), "kms_key_id is only used with sse: aws:kms")
        return self


class KeysSettings(_Strict):
    """Virtual keys (with DATABASE_URL): served from an in-memory cache that a background task refreshes from
    PostgreSQL; a request never waits on the database, except a key never seen before (one bounded lookup)."""

    refresh_seconds: float = Field(default=30.0, gt=0, le=3600, description="full reload of keys and teams")
    max_stale_seconds: float = Field(
        default=3600.0, gt=0, description="PostgreSQL unreachable: keys known are served from the cache this long"
    )
    lookup_timeout_seconds: float = Field(
        default=0.5, gt=0, le=10, description="a key never seen: how long its one lookup may take"
    )
    lookups_per_second: float = Field(default=20.0, gt=0, description="lookups of unknown keys, at most")
    negative_ttl_seconds: float = Field(default=30.0, ge=0, le=3600, description="unknown keys not looked up again")
    spend_flush_seconds: float = Field(default=10.0, gt=0, le=3600, description="spend written in batches this often")


class BreakerSettings(_Strict):
    """One dependency's circuit breaker (routeiq_shared/breaker.py)."""

    failures: int = Field(default=5, ge=1, le=1000, description="consecutive failures that open the breaker")
    cooldown_seconds: float = Field(default=60.0, ge=0, le=3600, description="open this long, then one probe")
    latency_budget_seconds: float | None = Field(
        default=None, gt=0, le=600, description="a call slower than this counts as a failure; unset: none"
    )

    def policy(self) -> BreakerPolicy:
        return BreakerPolicy(self.failures, self.cooldown_seconds, self.latency_budget_seconds)


def _fast_breaker() -> BreakerSettings:
    # Redis and PostgreSQL: one failed call already cost a request its timeout, so the next ones go to the
    # fallback at once, and a probe every second brings the dependency back as soon as it answers.
    return BreakerSettings(failures=1, cooldown_seconds=1.0)


class BreakersSettings(_Strict):
    """Circuit breakers of the gateway's dependencies; provider deployments keep LiteLLM's allowed_fails /
    cooldown_time (router_settings) and add `deployment_latency_budget_seconds`."""

    redis: BreakerSettings = Field(default_factory=_fast_breaker, description="limits (and the fallback to local)")
    postgres: BreakerSettings = Field(
        default_factory=_fast_breaker, description="key cache refresh and lookups, spend writes, the audit table"
    )
    s3: BreakerSettings = Field(default_factory=BreakerSettings, description="records and audit shipping")
    deployment_latency_budget_seconds: float | None = Field(
        default=None,
        gt=0,
        le=600,
        description="a provider call slower than this counts as a failure of its deployment (allowed_fails)",
    )

    def policies(self) -> dict[str, BreakerPolicy]:
        return {"redis": self.redis.policy(), "postgres": self.postgres.policy(), "s3": self.s3.policy()}


# LiteLLM's cache call types (`cache_params.supported_call_types`) → the endpoint each one caches.
CACHE_CALL_TYPES: dict[str, str] = {
    "completion": "chat/completions",
    "acompletion": "chat/completions",
    "text_completion": "completions",
    "atext_completion": "completions",
    "embedding": "embeddings",
    "aembedding": "embeddings",
    "transcription": "audio/transcriptions",
    "atranscription": "audio/transcriptions",
    "rerank": "rerank",
    "arerank": "rerank",
    "responses": "responses",
    "aresponses": "responses",
}
# What LiteLLM's `type` may be; RouteIQ serves the first two and refuses the rest by name (litellm_compat.py).
CACHE_TYPES_SERVED = ("redis", "local")
_NAMESPACE = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"  # no `{`/`}`: the Redis key's hash tag follows it


def _all_call_types() -> list[str]:
    return list(CACHE_CALL_TYPES)


class CacheParams(_Strict):
    """`litellm_settings.cache_params`, the keys RouteIQ honours (litellm_compat.CACHE_PARAMS refuses the others by
    name). The Redis server is REDIS_URL's, never the config's."""

    type: str = Field(
        default="redis", description="redis (REDIS_URL; an in-memory LRU while unset or down) or local (the LRU only)"
    )
    mode: Literal["default_on", "default_off"] = Field(
        default="default_on", description='default_off: only requests with `cache: {"use-cache": true}` use it'
    )
    ttl: float | None = Field(default=None, gt=0, description="seconds an answer is kept; unset: 600")
    default_in_memory_ttl: float | None = Field(default=None, gt=0, description="type local: wins over ttl")
    default_in_redis_ttl: float | None = Field(default=None, gt=0, description="type redis: wins over ttl")
    namespace: str | None = Field(default=None, pattern=_NAMESPACE, description="prefix of every cache key")
    supported_call_types: list[str] = Field(
        default_factory=_all_call_types, description="LiteLLM call types cached (acompletion = /v1/chat/completions, …)"
    )
    socket_timeout: float = Field(
        default=0.1, gt=0, le=5, description="longest a request waits on one Redis call (then: a miss, served on)"
    )
    max_connections: int = Field(default=64, ge=1, le=10_000, description="Redis connections of the cache, at most")

    @field_validator("type")
    @classmethod
    def _served_type(cls, value: str) -> str:
        if value not in CACHE_TYPES_SERVED:
            raise ValueError(f"unknown cache type {value!r}: RouteIQ serves {' and '.join(CACHE_TYPES_SERVED)}")
        return value

    @field_validator("supported_call_types")
    @classmethod
    def _known_call_types(cls, value: list[str]) -> list[str]:
        for i, name in enumerate(value):
            if name not in CACHE_CALL_TYPES:
                raise _NestedError(
                    (i,), f"{name!r} is not a call type RouteIQ caches (one of: {', '.join(CACHE_CALL_TYPES)})"
                )
        return value

    @property
    def effective_ttl(self) -> float:
        """LiteLLM's precedence: the store's own default wins over `ttl`; RouteIQ's default is 600 s."""
        own = self.default_in_redis_ttl if self.type == "redis" else self.default_in_memory_ttl
        return own or self.ttl or 600.0

    @property
    def endpoints(self) -> frozenset[str]:
        return frozenset(CACHE_CALL_TYPES[name] for name in self.supported_call_types)


class LiteLLMSettings(_Strict):
    """What RouteIQ reads of `litellm_settings` once litellm_compat.adapt() has mapped, warned or refused the rest."""

    cache: bool = Field(default=False, description="answer repeated requests from the response cache")
    cache_params: CacheParams = Field(default_factory=CacheParams)


class CacheSettings(_Strict):
    """RouteIQ's own bounds of the response cache (litellm_settings.cache turns it on)."""

    max_entry_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="answers larger than this are not cached"
    )
    max_ttl_seconds: float = Field(
        default=7 * 86400, gt=0, description="a request's cache.ttl above this is refused (400)"
    )
    local_max_entries: int = Field(default=10_000, ge=1, description="in-memory LRU: entries, at most")
    local_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024 * 1024, description="in-memory LRU: bytes of answers, at most"
    )


class RouteIQSettings(_Strict):
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    keys: KeysSettings = Field(default_factory=KeysSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    routers: list[RouterSpec] = Field(default_factory=list)
    egress: EgressSettings = Field(default_factory=EgressSettings)
    records: RecordsSettings = Field(default_factory=RecordsSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    breakers: BreakersSettings = Field(default_factory=BreakersSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)


class GatewayConfig(_Strict):
    model_list: list[ModelEntry] = Field(min_length=1)
    router_settings: RouterSettings = Field(default_factory=RouterSettings)
    general_settings: GeneralSettings = Field(default_factory=GeneralSettings)
    litellm_settings: LiteLLMSettings = Field(default_factory=LiteLLMSettings)
    environment_variables: dict[str, Annotated[str, Field(strict=True)]] = Field(
        default_factory=dict, description="set in the gateway's environment; resolve os.environ/ references"
    )
    routeiq: RouteIQSettings = Field(default_factory=RouteIQSettings)

    @field_validator("environment_variables")
    @classmethod
    def _cannot_widen_secret_dirs(cls, value: dict[str, str]) -> dict[str, str]:
        # The pod's setting, not the config's: a config from the bucket must not choose where it may read files.
        if SECRET_DIRS_ENV in value:
            raise _NestedError((SECRET_DIRS_ENV,), "set it in the gateway's environment (the pod spec), not here")
        return value

    @field_validator("router_settings")
    @classmethod
    def _fallbacks_are_pairs(cls, value: RouterSettings) -> RouterSettings:
        for i, entry in enumerate(value.fallbacks):
            if len(entry) != 1:
                raise ValueError(f"fallbacks[{i}] must map exactly one model_name to its fallbacks")
        return value


class Candidate(_Strict):
    """One entry of `llm_candidates.json` (LLMRouter's shape)."""

    size: str | None = None
    feature: str | None = None
    input_price: float = Field(ge=0)
    output_price: float = Field(ge=0)
    model: str = Field(min_length=1)
    service: str | None = None


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config with its env references resolved, and the version it was read as."""

    config: GatewayConfig
    version: str
    candidates: Mapping[str, Candidate]
    warnings: tuple[str, ...] = ()  # LiteLLM keys accepted with no effect (litellm_compat.py), one line each
    secret_files: tuple[str, ...] = ()  # the os.file/ paths read by this load (never their content)


def format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(err: Any) -> tuple[str, str]:
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
        cause = err["ctx"]["error"]
        msg = str(cause)  # our validators' words, without pydantic's "Value error, " prefix
        if isinstance(cause, _NestedError):
            return format_loc((*err["loc"], *cause.loc)), msg
    else:
        msg = err["msg"]
    return format_loc(tuple(err["loc"])), msg


def _validation_error(exc: ValidationError, source: str) -> ConfigError:
    """Every problem pydantic found, each with its key's path (a union's alternatives fold into one line)."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        path, msg = _problem(err)
        if not any(p == path for p, _ in problems):
            problems.append((path, msg))
    return ConfigError.of(problems, source)


def content_version(*blobs: bytes) -> str:
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(hashlib.sha256(blob).digest())
    return digest.hexdigest()[:12]


def parse_config(raw: bytes, source: str = "config.yaml", warnings: list[str] | None = None) -> GatewayConfig:
    """Parse and validate; LiteLLM keys are adapted first (litellm_compat.py). Warnings (keys accepted with no
    effect) are appended to `warnings` when given."""
    if warnings is None:
        warnings = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"not UTF-8 (byte {exc.start})", source) from None
    try:
        data = safe_load_bounded(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"YAML syntax error{where}", source) from None
    except YamlBoundError as exc:
        raise ConfigError("", str(exc), source) from None
    except RecursionError:
        raise ConfigError("", "YAML nested too deeply", source) from None
    if data is None:
        raise ConfigError("", "empty file", source)
    if not isinstance(data, dict):
        raise ConfigError("", "top level must be a mapping", source)
    data, refused, warned = adapt(data)
    if refused:
        raise ConfigError.of([(p.path, p.message) for p in refused], source)
    warnings.extend(f"{p.path}: {p.message}" for p in warned)
    try:
        config = GatewayConfig.model_validate(data, context={"resolved": False})
    except ValidationError as exc:
        raise _validation_error(exc, source) from None
    try:
        check_ref_syntax(data)
    except SecretRefError as exc:
        raise ConfigError(exc.path, exc.message, source) from None
    return config


def parse_candidates(raw: bytes, source: str = "llm_candidates.json") -> dict[str, Candidate]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError("", f"invalid JSON: {exc}", source) from None
    if not isinstance(data, dict):
        raise ConfigError("", "top level must be an object of candidates", source)
    out: dict[str, Candidate] = {}
    for name, entry in data.items():
        try:
            out[name] = Candidate.model_validate(entry)
        except ValidationError as exc:
            path, message = _problem(exc.errors(include_url=False)[0])
            raise ConfigError(format_loc((name, *_split_path(path))), message, source) from None
    return out


def _split_path(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.replace("[", ".").replace("]", "").split(".") if p)


def cross_check(config: GatewayConfig, candidates: Mapping[str, Candidate]) -> None:
    names = {m.model_name for m in config.model_list}
    for i, entry in enumerate(config.router_settings.fallbacks):
        for primary, targets in entry.items():
            for j, target in enumerate([primary, *targets]):
                if target not in names:
                    where = f"router_settings.fallbacks[{i}].{primary}"
                    where += f"[{j - 1}]" if j else ""
                    raise ConfigError(where, f"model {target!r} is not in model_list")
    for i, router in enumerate(config.routeiq.routers):
        where = f"routeiq.routers[{i}]"
        if router.name in names:
            raise ConfigError(f"{where}.name", f"{router.name!r} is also a model_list model_name")
        for j, target in enumerate(router.candidates):
            if target not in names:
                raise ConfigError(f"{where}.candidates[{j}]", f"model {target!r} is not in model_list")
        if router.default is not None and router.default not in router.candidates:
            raise ConfigError(f"{where}.default", f"{router.default!r} is not one of the router's candidates")
        if router.fallback is not None and router.fallback not in FALLBACK_STRATEGIES and router.fallback not in names:
            raise ConfigError(
                f"{where}.fallback",
                f"{router.fallback!r} is neither a strategy ({', '.join(FALLBACK_STRATEGIES)}) nor in model_list",
            )
    routers = {r.name for r in config.routeiq.routers}
    for alias, to in config.router_settings.model_group_alias.items():
        aliased = f"router_settings.model_group_alias.{alias}"
        group = to if isinstance(to, str) else to.model
        if alias in names or alias in routers:
            raise ConfigError(aliased, f"{alias!r} is already a model_list model_name or a router")
        if group not in names:
            raise ConfigError(aliased, f"model {group!r} is not in model_list")
    seen_routers = [r.name for r in config.routeiq.routers]
    if len(seen_routers) != len(set(seen_routers)):
        raise ConfigError("routeiq.routers", "router names must be unique")
    for name, cand in candidates.items():
        if cand.model not in names and name not in names:
            raise ConfigError(f"{name}.model", f"model {cand.model!r} is not in model_list", "llm_candidates.json")


def _header_values(config: GatewayConfig) -> Iterator[tuple[str, str, str]]:
    """(path shown in errors, what it is, value) of every configured value that becomes an outbound header."""
    for i, entry in enumerate(config.model_list):
        where = f"model_list[{i}].litellm_params"
        params = entry.litellm_params.model_dump(exclude_none=True)
        for key, value in params.items():
            if isinstance(value, str) and (key in _HEADER_PARAMS or _CREDENTIAL_PARAM.search(key)):
                yield f"{where}.{key}", "value", value
        for key in _HEADER_MAPS:
            headers = params.get(key)
            if isinstance(headers, dict):
                for name, value in headers.items():
                    yield f"{where}.{key}", "header name", str(name)  # the path stops here: the name is the value
                    if isinstance(value, str):
                        yield f"{where}.{key}.{name}", "value", value


def check_header_values(config: GatewayConfig, *, resolved: bool) -> None:
    """Refuse what cannot be sent in an HTTP header: a CR/LF would inject a header (and an upstream's error
    would echo the key back), and non-Latin-1 text cannot be encoded. The value is never echoed."""
    for path, what, value in _header_values(config):
        if not resolved and is_secret_ref(value):
            continue
        bad = next((i for i, c in enumerate(value) if ord(c) < 0x20 or ord(c) == 0x7F), None)
        if bad is not None:
            raise ConfigError(
                path,
                f"{what} contains a control character (CR, LF, NUL, …) at character {bad}; not sendable as a header",
            )
        try:
            value.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise ConfigError(
                path, f"{what} has a character at {exc.start} that is not Latin-1; not sendable as a header"
            ) from None


def _check(
    config_raw: bytes, candidates_raw: bytes | None, warnings: list[str]
) -> tuple[GatewayConfig, dict[str, Candidate]]:
    config = parse_config(config_raw, warnings=warnings)
    candidates = parse_candidates(candidates_raw) if candidates_raw else {}
    cross_check(config, candidates)
    check_header_values(config, resolved=False)
    return config, candidates


def check_config(config_raw: bytes, candidates_raw: bytes | None = None) -> str:
    """What can be known without the pod's secrets: structure, cross references, literal values and the syntax of
    `os.environ/` and `os.file/` references (not their values: a secret may be mounted only in the gateway's
    container).
    Returns the version; raises ConfigError."""
    return check_config_report(config_raw, candidates_raw)[0]


def check_config_report(config_raw: bytes, candidates_raw: bytes | None = None) -> tuple[str, list[str]]:
    """check_config, and the warnings: LiteLLM keys accepted with no effect, one line each."""
    warnings: list[str] = []
    _check(config_raw, candidates_raw, warnings)
    return content_version(config_raw, candidates_raw or b""), warnings


def load_config(
    config_raw: bytes, candidates_raw: bytes | None = None, env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Parse, validate, cross-check and resolve secrets (`os.environ/` from `env`, `os.file/` read now, under the
    directories `env` allows). Raises ConfigError; never returns a half-valid config."""
    env = os.environ if env is None else env
    files = SecretFiles(env)  # before the config's own variables, which may not name ROUTEIQ_SECRET_DIRS anyway
    warnings: list[str] = []
    config, candidates = _check(config_raw, candidates_raw, warnings)
    if config.environment_variables:  # as LiteLLM does: the file's variables win over the process's
        env = {**env, **config.environment_variables}
    try:
        resolved = resolve_refs(config.model_dump(exclude_unset=True), env, files)
    except SecretRefError as exc:
        raise ConfigError(exc.path, exc.message) from None
    try:
        config = GatewayConfig.model_validate(resolved, context={"resolved": True})
    except ValidationError as exc:
        raise _validation_error(exc, "config.yaml") from None
    check_header_values(config, resolved=True)
    version = content_version(config_raw, candidates_raw or b"")
    return LoadedConfig(config, version, candidates, tuple(warnings), tuple(files.read_paths))
