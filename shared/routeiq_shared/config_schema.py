"""The config contract: `config.yaml` (LiteLLM-compatible plus a `routeiq:` section) and `llm_candidates.json`.

Defined once, here, and run by both the gateway and config-sync, so a file the agent accepts is a file the gateway
loads. Unknown keys are errors that name the key's path: a typo must not silently change behaviour. The one open
mapping is `litellm_params`, whose extra keys are provider settings handed to LiteLLM as they are.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "os.environ/"


class ConfigError(ValueError):
    """A config or candidates file that must not be loaded. `path` names the offending key (`a.b[0].c`)."""

    def __init__(self, path: str, message: str, source: str = "config.yaml") -> None:
        self.path = path
        self.message = message
        self.source = source
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class ModelEntry(_Strict):
    model_name: str = Field(min_length=1)
    litellm_params: LiteLLMParams
    model_info: dict[str, Any] = Field(default_factory=dict)


class RouterSettings(_Strict):
    routing_strategy: Literal["simple-shuffle"] = "simple-shuffle"
    num_retries: int = Field(default=2, ge=0, le=10)
    timeout: float = Field(default=60.0, gt=0)
    stream_timeout: float | None = Field(default=None, gt=0)
    retry_after: float = Field(default=0.05, ge=0, description="base of the jittered backoff, seconds")
    fallbacks: list[dict[str, list[str]]] = Field(default_factory=list)


class GeneralSettings(_Strict):
    master_key: str | None = None


class LimitsSettings(_Strict):
    max_in_flight: int = Field(default=1024, ge=1, description="requests past this get 503 at once")
    max_request_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)


class ServerSettings(_Strict):
    drain_timeout_seconds: float = Field(default=30.0, ge=0)
    access_log: bool = False


ARTIFACT_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
ARTIFACT_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class RouterSpec(_Strict):
    """A virtual model: requests for `name` are sent to one of `candidates`, chosen by a learned model."""

    name: str = Field(min_length=1, description="the model name clients ask for, e.g. auto")
    strategy: Literal["learned"] = "learned"
    artifact: str = Field(pattern=ARTIFACT_NAME_PATTERN, description="router model in the registry and volume")
    model_version: str | None = Field(
        default=None, pattern=ARTIFACT_VERSION_PATTERN, description="pin: serve this artifact version, not CURRENT"
    )
    candidates: list[str] = Field(min_length=1, description="model groups the router may choose")
    default: str | None = Field(default=None, description="group used while no artifact is loaded")

    @property
    def fallback_group(self) -> str:
        return self.default or self.candidates[0]


class RouteIQSettings(_Strict):
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    routers: list[RouterSpec] = Field(default_factory=list)


class GatewayConfig(_Strict):
    model_list: list[ModelEntry] = Field(min_length=1)
    router_settings: RouterSettings = Field(default_factory=RouterSettings)
    general_settings: GeneralSettings = Field(default_factory=GeneralSettings)
    litellm_settings: dict[str, Any] = Field(default_factory=dict)
    routeiq: RouteIQSettings = Field(default_factory=RouteIQSettings)

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


def format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _first_error(exc: ValidationError, source: str) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    return ConfigError(format_loc(tuple(err["loc"])), msg, source)


def content_version(*blobs: bytes) -> str:
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(hashlib.sha256(blob).digest())
    return digest.hexdigest()[:12]


def parse_config(raw: bytes, source: str = "config.yaml") -> GatewayConfig:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"not UTF-8 (byte {exc.start})", source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"YAML syntax error{where}", source) from None
    if data is None:
        raise ConfigError("", "empty file", source)
    if not isinstance(data, dict):
        raise ConfigError("", "top level must be a mapping", source)
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, source) from None


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
            err = _first_error(exc, source)
            raise ConfigError(format_loc((name, *_split_path(err.path))), err.message, source) from None
    return out


def _split_path(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.replace("[", ".").replace("]", "").split(".") if p)


def resolve_env_refs(value: Any, path: str, env: Mapping[str, str]) -> Any:
    """Replace every `os.environ/NAME` string with its value; an unset NAME is an error naming the key."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        if name not in env:
            raise ConfigError(path, f"environment variable {name} is not set")
        return env[name]
    if isinstance(value, dict):
        return {k: resolve_env_refs(v, f"{path}.{k}" if path else k, env) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env_refs(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


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
    seen_routers = [r.name for r in config.routeiq.routers]
    if len(seen_routers) != len(set(seen_routers)):
        raise ConfigError("routeiq.routers", "router names must be unique")
    for name, cand in candidates.items():
        if cand.model not in names and name not in names:
            raise ConfigError(f"{name}.model", f"model {cand.model!r} is not in model_list", "llm_candidates.json")


def load_config(
    config_raw: bytes, candidates_raw: bytes | None = None, env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Parse, validate, cross-check and resolve secrets. Raises ConfigError; never returns a half-valid config."""
    env = os.environ if env is None else env
    config = parse_config(config_raw)
    candidates = parse_candidates(candidates_raw) if candidates_raw else {}
    cross_check(config, candidates)
    resolved = resolve_env_refs(config.model_dump(exclude_unset=True), "", env)
    config = GatewayConfig.model_validate(resolved)
    return LoadedConfig(config, content_version(config_raw, candidates_raw or b""), candidates)
