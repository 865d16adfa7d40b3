"""What RouteIQ does with each key of a LiteLLM proxy config: honour it, map it to its own setting, warn that it has
no effect (operational knobs of LiteLLM's own machinery), or refuse it as a LiteLLM feature RouteIQ does not
support. Nothing that changes behaviour is ever accepted and ignored.

The tables below are the single source of `docs/litellm-compatibility.md` (a test keeps the two equal) and of the
checks `adapt()` runs on the raw document before the schema sees it:
- every refused key of the file is named in one error (not only the first);
- warned keys are dropped, each with one warning line;
- mapped keys are rewritten into what RouteIQ reads (e.g. `litellm_settings.num_retries` →
  `router_settings.num_retries`, where `router_settings` wins when both are set, as in LiteLLM);
- an empty section (`general_settings:` with nothing under it) is read as `{}`.
Keys in none of the tables are left to the schema, which refuses them as unknown (a typo must not pass).
Reference: LiteLLM's proxy config documentation, "All settings" (docs/proxy/config_settings.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["honoured", "mapped", "warned", "refused"]


@dataclass(frozen=True, slots=True)
class Key:
    status: Status
    note: str


def _h(note: str) -> Key:
    return Key("honoured", note)


def _m(note: str) -> Key:
    return Key("mapped", note)


def _w(note: str = "LiteLLM's own operational setting; RouteIQ has no such machinery") -> Key:
    return Key("warned", note)


def _r(note: str) -> Key:
    return Key("refused", note)


TOP_LEVEL: dict[str, Key] = {
    "model_list": _h("deployments; see the model_list table"),
    "litellm_settings": _h("section; see its table"),
    "general_settings": _h("section; see its table"),
    "router_settings": _h("section; see its table"),
    "environment_variables": _h(
        "set in the gateway's environment and used to resolve `os.environ/` references; numbers and booleans are "
        "written as text, as LiteLLM does, and an empty value as "
        "; a list or a mapping is refused"
    ),
    "routeiq": _h("RouteIQ's own section (routers, limits, records, egress)"),
    "guardrails": _r("guardrails"),
    "mcp_servers": _r("MCP servers"),
    "mcp_tools": _r("MCP tools"),
    "vector_store_registry": _r("vector stores"),
    "vector_stores": _r("vector stores"),
    "credential_list": _r("the credentials registry (reference secrets with `os.environ/` or `os.file/` instead)"),
    "callback_settings": _r("logging callbacks"),
    "files_settings": _r("the files API"),
    "assistant_settings": _r("the assistants API"),
    "finetune_settings": _r("fine-tuning"),
    "search_tools": _r("search tools"),
    "prompts": _r("prompt management"),
    "include": _r("config includes (one file per config; config-sync writes it whole)"),
    "pass_through_endpoints": _r("pass-through endpoints"),
    "agent_list": _r("agents"),
}

MODEL_ENTRY: dict[str, Key] = {
    "model_name": _h(
        "the model group clients ask for; `*` patterns (`openai/*`, `*`) answer every name they match, the `*` of "
        "`litellm_params.model` filled from it; an exact name wins, then the most specific pattern"
    ),
    "litellm_params": _h("provider call settings; extra keys go to LiteLLM as they are"),
    "model_info": _h("metadata (prices, context window)"),
    "rpm": _m("same as `litellm_params.rpm` (weights simple-shuffle, limits usage-based-routing)"),
    "tpm": _m("same as `litellm_params.tpm`"),
}

_CALLBACKS = "logging callbacks (Prometheus metrics and OpenTelemetry traces are built in)"
LITELLM_SETTINGS: dict[str, Key] = {
    "drop_params": _m("`litellm_params.drop_params` of every deployment that does not set its own"),
    "num_retries": _m("`router_settings.num_retries` (router_settings wins when both are set)"),
    "request_timeout": _m("`router_settings.timeout` (router_settings wins when both are set)"),
    "fallbacks": _m("`router_settings.fallbacks` (router_settings wins when both are set)"),
    "default_fallbacks": _m("a `router_settings.fallbacks` entry for every model group without its own"),
    "callbacks": _w(_CALLBACKS + ": `prometheus` and `otel` are accepted with a warning, any other is refused"),
    "success_callback": _w(_CALLBACKS + ": as `callbacks`"),
    "failure_callback": _w(_CALLBACKS + ": as `callbacks`"),
    "service_callbacks": _w("RouteIQ reports Redis and store failures in its own metrics"),
    "set_verbose": _w("RouteIQ's log level is LOG_LEVEL"),
    "json_logs": _w("RouteIQ always logs JSON"),
    "turn_off_message_logging": _w("RouteIQ never logs messages"),
    "redact_user_api_key_info": _w("RouteIQ never logs API keys"),
    "disable_end_user_cost_tracking": _w(),
    "disable_end_user_cost_tracking_prometheus_only": _w(),
    "disable_hf_tokenizer_download": _w(),
    "disable_copilot_system_to_assistant": _w("deprecated in LiteLLM"),
    "context_window_fallbacks": _r("context-window fallbacks"),
    "content_policy_fallbacks": _r("content-policy fallbacks"),
    "cache": _h(
        "the response cache (gateway/routeiq_gateway/cache/): Redis (REDIS_URL) with an in-memory LRU while Redis "
        "is unset or down; per request `cache: {no-cache, no-store, ttl, s-maxage, use-cache, namespace}`"
    ),
    "cache_params": _h("the response cache's settings; see the cache_params table"),
    "enable_caching_on_provider_specific_optional_params": _w(
        "RouteIQ's cache key always includes every request field but `user`, `metadata` and `stream_options`"
    ),
    "enable_redis_auth_cache": _w("RouteIQ keeps virtual keys in memory (tenancy/key_cache.py), not in Redis"),
    "mcp_aliases": _r("MCP servers"),
    "modify_params": _r("request rewriting (modify_params)"),
    "enable_preview_features": _r("preview features"),
    "force_ipv4": _r("forcing IPv4"),
    "langfuse_default_tags": _r("Langfuse logging"),
    "key_generation_settings": _r("virtual key generation rules"),
    "max_budget": _r("proxy budgets"),
    "budget_duration": _r("proxy budgets"),
    "max_end_user_budget": _r("end-user budgets"),
    "enable_json_schema_validation": _r("JSON-schema validation of responses"),
    "enable_key_alias_format_validation": _r("virtual key aliases"),
    "use_chat_completions_url_for_anthropic_messages": _r("/v1/messages routing options"),
    "disable_add_transform_inline_image_block": _r("Fireworks image transforms"),
    "guardrails": _r("guardrails"),
    "default_team_settings": _r("teams"),
    "upperbound_key_generate_params": _r("virtual key generation rules"),
    "default_internal_user_params": _r("LiteLLM's user management"),
    "tag_budget_config": _r("tag budgets"),
    "public_model_groups": _r("LiteLLM's model hub"),
    "allowed_fails": _m("`router_settings.allowed_fails` (router_settings wins when both are set)"),
    "cooldown_time": _m("`router_settings.cooldown_time` (router_settings wins when both are set)"),
    "ssl_verify": _r("a global TLS setting (set `ssl_verify` in each deployment's litellm_params)"),
    "ssl_certificate": _r("a global TLS setting (set `ssl_verify: /path/ca.pem` per deployment)"),
    "forward_traceparent_to_llm_provider": _w("RouteIQ always sends the upstream a W3C traceparent naming its span"),
    "cost_margin_config": _r("cost margins"),
    "cost_discount_config": _r("cost discounts"),
    "extra_spend_tag_headers": _r("spend tags"),
    "disable_add_user_agent_to_request_tags": _r("spend tags"),
    "custom_prometheus_metadata_labels": _r("LiteLLM's Prometheus metric options (RouteIQ's metrics are fixed)"),
    "custom_prometheus_tags": _r("LiteLLM's Prometheus metric options"),
    "prometheus_metrics_config": _r("LiteLLM's Prometheus metric options"),
    "prometheus_initialize_budget_metrics": _r("LiteLLM's Prometheus metric options"),
    "prometheus_emit_stream_label": _r("LiteLLM's Prometheus metric options"),
    "enable_end_user_cost_tracking_prometheus_only": _r("LiteLLM's Prometheus metric options"),
    "require_auth_for_metrics_endpoint": _r("auth on /metrics (keep it off the public path with a NetworkPolicy)"),
    "max_internal_user_budget": _r("LiteLLM's user management"),
    "internal_user_budget_duration": _r("LiteLLM's user management"),
    "max_end_user_budget_id": _r("end-user budgets"),
    "default_team_params": _r("teams"),
    "default_key_generate_params": _r("virtual key generation rules"),
    "ui_theme_config": _r("LiteLLM's UI"),
    "enable_model_config_credential_overrides": _r("per-request credential overrides"),
    "allow_dynamic_callback_disabling": _r("logging callbacks"),
    "global_disable_no_log_param": _r("logging callbacks"),
    "s3_callback_params": _r("logging callbacks"),
    "skip_system_message_in_guardrail": _r("guardrails"),
    "check_provider_endpoint": _r("provider endpoint checks"),
    "store_audit_logs": _r("LiteLLM's audit logs"),
    "audit_log_callbacks": _r("LiteLLM's audit logs"),
    "global_prompt_directory": _r("prompt management"),
    "global_bitbucket_config": _r("prompt management"),
    "global_gitlab_config": _r("prompt management"),
    "enable_azure_ad_token_refresh": _r("Azure AD token refresh (set credentials per deployment)"),
    "enable_loadbalancing_on_batch_endpoints": _r("the batches API"),
    "custom_provider_map": _r("custom providers (route to an OpenAI-compatible api_base instead)"),
    "route_all_chat_openai_to_responses": _r("rewriting chat calls to the Responses API"),
    "vertex_ai_safety_settings": _r("global Vertex AI settings (set them in the deployment's litellm_params)"),
    "vertex_project": _r("global Vertex AI settings (set them in the deployment's litellm_params)"),
    "vertex_location": _r("global Vertex AI settings (set them in the deployment's litellm_params)"),
    "model_group_settings": _r("LiteLLM's model hub"),
}

_REDIS_IN_CONFIG = "Redis connection settings in config (the cache uses REDIS_URL from the environment)"
CACHE_PARAMS: dict[str, Key] = {
    "type": _h("`redis` (default, as LiteLLM's proxy) or `local`; every other cache type is refused by name"),
    "mode": _h('`default_on` (default) or `default_off`: then only requests with `cache: {"use-cache": true}`'),
    "ttl": _h("seconds an answer is kept (RouteIQ's default 600; LiteLLM keeps Redis entries forever)"),
    "default_in_memory_ttl": _h("with type local, wins over ttl"),
    "default_in_redis_ttl": _h("with type redis, wins over ttl"),
    "namespace": _h("prefix of every cache key (letters, digits, `._:-`)"),
    "supported_call_types": _h(
        "call types cached: (a)completion, (a)text_completion, (a)embedding, (a)transcription, (a)rerank, "
        "(a)responses; default all; `[]` caches nothing"
    ),
    "socket_timeout": _h("seconds a request waits on one Redis call, then it is a miss (RouteIQ's default 0.1)"),
    "max_connections": _h("Redis connections of the cache, at most (default 64)"),
    "host": _r(_REDIS_IN_CONFIG),
    "port": _r(_REDIS_IN_CONFIG),
    "password": _r(_REDIS_IN_CONFIG),
    "username": _r(_REDIS_IN_CONFIG),
    "db": _r(_REDIS_IN_CONFIG),
    "url": _r(_REDIS_IN_CONFIG),
    "ssl": _r(_REDIS_IN_CONFIG + "; TLS is `rediss://`"),
    "ssl_cert_reqs": _r(_REDIS_IN_CONFIG),
    "ssl_check_hostname": _r(_REDIS_IN_CONFIG),
    "redis_startup_nodes": _r("Redis Cluster settings in config (REDIS_URL)"),
    "service_name": _r("Redis Sentinel settings in config (REDIS_URL)"),
    "sentinel_nodes": _r("Redis Sentinel settings in config (REDIS_URL)"),
    "sentinel_password": _r("Redis Sentinel settings in config (REDIS_URL)"),
    "gcp_service_account": _r("GCP IAM auth to Redis"),
    "gcp_ssl_ca_certs": _r("GCP IAM auth to Redis"),
    "redis_flush_size": _r("batched cache writes"),
    "similarity_threshold": _r("semantic caching"),
    "redis_semantic_cache_embedding_model": _r("semantic caching"),
    "redis_semantic_cache_index_name": _r("semantic caching"),
    "valkey_semantic_cache_embedding_model": _r("semantic caching"),
    "valkey_semantic_cache_index_name": _r("semantic caching"),
    "qdrant_api_base": _r("semantic caching"),
    "qdrant_api_key": _r("semantic caching"),
    "qdrant_collection_name": _r("semantic caching"),
    "qdrant_quantization_config": _r("semantic caching"),
    "qdrant_semantic_cache_embedding_model": _r("semantic caching"),
    "qdrant_semantic_cache_vector_size": _r("semantic caching"),
    "s3_bucket_name": _r("an S3 response cache"),
    "s3_region_name": _r("an S3 response cache"),
    "s3_api_version": _r("an S3 response cache"),
    "s3_use_ssl": _r("an S3 response cache"),
    "s3_verify": _r("an S3 response cache"),
    "s3_endpoint_url": _r("an S3 response cache"),
    "s3_aws_access_key_id": _r("an S3 response cache"),
    "s3_aws_secret_access_key": _r("an S3 response cache"),
    "s3_aws_session_token": _r("an S3 response cache"),
    "s3_config": _r("an S3 response cache"),
    "s3_path": _r("an S3 response cache"),
    "gcs_bucket_name": _r("a GCS response cache"),
    "gcs_path_service_account": _r("a GCS response cache"),
    "gcs_path": _r("a GCS response cache"),
    "azure_account_url": _r("an Azure Blob response cache"),
    "azure_blob_container": _r("an Azure Blob response cache"),
    "disk_cache_dir": _r("a disk response cache"),
}
# cache_params.type values LiteLLM knows and RouteIQ does not serve: refused by name, with the key's path.
REFUSED_CACHE_TYPES = {
    "redis-semantic": "semantic caching",
    "valkey-semantic": "semantic caching",
    "qdrant-semantic": "semantic caching",
    "s3": "an S3 response cache",
    "gcs": "a GCS response cache",
    "azure-blob": "an Azure Blob response cache",
    "disk": "a disk response cache",
}

GENERAL_SETTINGS: dict[str, Key] = {
    "master_key": _h("the API key clients send (`Authorization: Bearer`); at least 8 characters"),
    "max_request_size_mb": _m("`routeiq.limits.max_request_body_bytes` (MiB → bytes; routeiq wins when both)"),
    "global_max_parallel_requests": _m("`routeiq.limits.max_in_flight` (routeiq wins when both)"),
    "background_health_checks": _w("RouteIQ serves /health/liveness and /health/readiness; no upstream probing"),
    "health_check_interval": _w("as background_health_checks"),
    "health_check_details": _w("as background_health_checks"),
    "disable_spend_logs": _w(),
    "disable_spend_updates": _w(),
    "disable_master_key_return": _w("RouteIQ never returns the master key"),
    "disable_reset_budget": _w(),
    "disable_adding_master_key_hash_to_db": _w(),
    "disable_prisma_schema_update": _w(),
    "disable_retry_on_max_parallel_request_limit_error": _w(),
    "proxy_batch_write_at": _w(),
    "proxy_budget_rescheduler_min_time": _w(),
    "proxy_budget_rescheduler_max_time": _w(),
    "proxy_batch_polling_interval": _w(),
    "user_api_key_cache_ttl": _w(),
    "store_prompts_in_spend_logs": _w(),
    "maximum_spend_logs_retention_period": _w(),
    "maximum_spend_logs_retention_interval": _w(),
    "maximum_spend_logs_cleanup_cron": _w(),
    "database_connection_pool_limit": _w(),
    "database_connection_timeout": _w(),
    "otel": _w("RouteIQ exports OpenTelemetry traces when OTEL_EXPORTER_OTLP_* is set"),
    "set_verbose": _w("RouteIQ's log level is LOG_LEVEL"),
    "disable_error_logs": _w(),
    "block_robots": _w("RouteIQ serves no UI"),
    "health_check_ignore_transient_errors": _w("as background_health_checks"),
    "enable_health_check_routing": _r("routing by background health checks"),
    "alerts": _r("Slack/e-mail alerting"),
    "token_rate_limit_type": _r("LiteLLM's rate limits"),
    "user_header_mappings": _r("user identity headers"),
    "custom_ui_sso_sign_in_handler": _r("SSO"),
    "coordination_redis": _r("Redis coordination between LiteLLM instances"),
    "use_redis_transaction_buffer": _r("spend tracking"),
    "use_shared_health_check": _r("shared health checks"),
    "database_url": _r("a database in config (RouteIQ reads DATABASE_URL from the environment)"),
    "allow_requests_on_db_unavailable": _r("LiteLLM's database fallback"),
    "store_model_in_db": _r("models stored in a database"),
    "supported_db_objects": _r("models stored in a database"),
    "custom_auth": _r("custom auth"),
    "enable_jwt_auth": _r("JWT auth"),
    "litellm_jwtauth": _r("JWT auth"),
    "enable_oauth2_auth": _r("OAuth2 auth"),
    "enable_oauth2_proxy_auth": _r("OAuth2 auth"),
    "oauth2_config_mappings": _r("OAuth2 auth"),
    "custom_sso": _r("SSO"),
    "allowed_routes": _r("route permissions"),
    "public_routes": _r("route permissions"),
    "admin_only_routes": _r("route permissions"),
    "allowed_ips": _r("IP allow-lists (use a NetworkPolicy)"),
    "use_x_forwarded_for": _r("client IPs from X-Forwarded-For"),
    "enforced_params": _r("enforced request parameters"),
    "enforce_user_param": _r("enforced request parameters"),
    "reject_clientside_metadata_tags": _r("metadata tags"),
    "alerting": _r("Slack/e-mail alerting (RouteIQ ships Prometheus alert rules)"),
    "alerting_threshold": _r("Slack/e-mail alerting"),
    "alerting_args": _r("Slack/e-mail alerting"),
    "alert_types": _r("Slack/e-mail alerting"),
    "alert_to_webhook_url": _r("Slack/e-mail alerting"),
    "spend_report_frequency": _r("spend reports"),
    "pass_through_endpoints": _r("pass-through endpoints"),
    "use_client_credentials_pass_through_routes": _r("pass-through endpoints"),
    "key_management_system": _r("secret managers (mount secrets and use `os.file/` or `os.environ/`)"),
    "key_management_settings": _r("secret managers"),
    "use_azure_key_vault": _r("secret managers"),
    "use_google_kms": _r("secret managers"),
    "max_parallel_requests": _r("per-deployment parallel-request limits"),
    "infer_model_from_keys": _r("model inference from keys"),
    "completion_model": _r("overriding the requested model"),
    "embedding_model": _r("overriding the requested model"),
    "image_generation_model": _r("overriding the requested model"),
    "moderation_model": _r("overriding the requested model"),
    "forward_client_headers_to_llm_api": _r("forwarding client headers upstream"),
    "forward_openai_org_id": _r("forwarding client headers upstream"),
    "allow_client_side_credentials": _r("client-side credentials"),
    "litellm_key_header_name": _r("a custom API key header"),
    "custom_key_generate": _r("virtual key generation rules"),
    "default_team_disabled": _r("teams"),
    "service_account_settings": _r("service accounts"),
    "litellm_license": _r("LiteLLM Enterprise"),
    "ui_access_mode": _r("LiteLLM's UI"),
    "user_mcp_management_mode": _r("MCP servers"),
    "disable_responses_id_security": _r("/v1/responses id security options"),
    "max_response_size_mb": _r("response size limits"),
    "allow_user_auth": _r("deprecated user auth"),
}

ROUTER_SETTINGS: dict[str, Key] = {
    "routing_strategy": _h("simple-shuffle, least-busy, latency-, cost- or usage-based-routing"),
    "num_retries": _h("retries per request, across the group's deployments"),
    "timeout": _h("seconds per upstream call"),
    "stream_timeout": _h("seconds per streamed upstream call"),
    "retry_after": _h("base of the jittered retry backoff, seconds"),
    "fallbacks": _h("model groups tried when a group fails"),
    "default_fallbacks": _m("a `fallbacks` entry for every model group without its own"),
    "model_group_alias": _h("another name for a model group (`{alias: group}` or `{alias: {model, hidden}}`)"),
    "debug_level": _w("RouteIQ's log level is LOG_LEVEL"),
    "set_verbose": _w("RouteIQ's log level is LOG_LEVEL"),
    "client_ttl": _w("RouteIQ keeps its upstream connections pooled"),
    "allowed_fails": _h(
        "a deployment failing more often than this in a minute cools down (default 3); while it cools it is tried "
        "only after the group's other deployments (LiteLLM skips it, and answers 429 when all are cooling)"
    ),
    "cooldown_time": _h("seconds a failing deployment cools down (default 5)"),
    "disable_cooldowns": _h("no cooldowns"),
    "allowed_fails_policy": _r("failure cooldowns"),
    "retry_policy": _r("per-error retry policies"),
    "model_group_retry_policy": _r("per-error retry policies"),
    "enable_pre_call_checks": _h(
        "count the input tokens and skip deployments whose context window (`model_info.max_input_tokens`, else "
        "LiteLLM's model map) is too small; 400 `context_length_exceeded` when none fits"
    ),
    "enable_pre_call_check": _m("`enable_pre_call_checks` (LiteLLM's docs spell it both ways)"),
    "optional_pre_call_checks": _r("pre-call checks"),
    "context_window_fallbacks": _r("context-window fallbacks"),
    "content_policy_fallbacks": _r("content-policy fallbacks"),
    "max_fallbacks": _r("a cap on fallbacks"),
    "default_litellm_params": _r("default call parameters for every deployment"),
    "redis_host": _r("Redis for usage tracking in config (RouteIQ reads REDIS_URL from the environment)"),
    "redis_port": _r("Redis for usage tracking in config"),
    "redis_password": _r("Redis for usage tracking in config"),
    "redis_db": _r("Redis for usage tracking in config"),
    "redis_url": _r("Redis for usage tracking in config"),
    "enable_tag_filtering": _r("tag-based routing"),
    "tag_filtering_match_any": _r("tag-based routing"),
    "default_max_parallel_requests": _r("per-deployment parallel-request limits"),
    "default_priority": _r("request priorities (the scheduler)"),
    "polling_interval": _r("request priorities (the scheduler)"),
    "routing_strategy_args": _r("routing strategy arguments"),
    "cache_responses": _r("the Router's own response cache (turn the cache on with `litellm_settings.cache`)"),
    "caching_groups": _r("cache entries shared across model groups"),
    "cache_kwargs": _r("the Router's own response cache (settings are `litellm_settings.cache_params`)"),
    "provider_budget_config": _r("provider budgets"),
    "deployment_affinity_ttl_seconds": _r("deployment affinity"),
    "ignore_invalid_deployments": _r("skipping invalid deployments (RouteIQ refuses the config instead)"),
    "search_tools": _r("search tools"),
    "guardrail_list": _r("guardrails"),
    "router_general_settings": _r("LiteLLM SDK router settings"),
    "alerting_config": _r("Slack/e-mail alerting"),
    "assistants_config": _r("the assistants API"),
}

SECTIONS: dict[str, dict[str, Key]] = {
    "litellm_settings": LITELLM_SETTINGS,
    "general_settings": GENERAL_SETTINGS,
    "router_settings": ROUTER_SETTINGS,
}
ACCEPTED_CALLBACKS = {
    "prometheus": "RouteIQ serves Prometheus metrics at /metrics itself",
    "otel": "RouteIQ exports OpenTelemetry traces when OTEL_EXPORTER_OTLP_* is set",
}


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str


def refusal(what: str) -> str:
    return f"a LiteLLM feature RouteIQ does not support: {what}"


def adapt(data: dict[str, Any]) -> tuple[dict[str, Any], list[Problem], list[Problem]]:
    """(the document rewritten into what the schema reads, refusals, warnings). The input is not modified."""
    out = copy.deepcopy(data)
    refused: list[Problem] = []
    warnings: list[Problem] = []
    for key in list(out):
        entry = TOP_LEVEL.get(key)
        if entry is not None and entry.status == "refused":
            refused.append(Problem(key, refusal(entry.note)))
    for section, table in SECTIONS.items():
        if section in out and out[section] is None:
            out[section] = {}  # `general_settings:` with nothing under it
        body = out.get(section)
        if not isinstance(body, dict):
            continue  # the schema says what is wrong with it
        for key in list(body):
            entry = table.get(key)
            if entry is None:
                continue
            path = f"{section}.{key}"
            if key in ("callbacks", "success_callback", "failure_callback"):
                _callbacks(path, body.pop(key), refused, warnings)
            elif entry.status == "refused":
                refused.append(Problem(path, refusal(entry.note)))
            elif entry.status == "warned":
                body.pop(key)
                warnings.append(Problem(path, f"ignored: {entry.note}"))
    litellm = out.get("litellm_settings")
    if isinstance(litellm, dict):
        _cache_params(litellm, refused, warnings)
    env = out.get("environment_variables")
    if env is None and "environment_variables" in out:
        out["environment_variables"] = {}
    elif isinstance(env, dict):
        for name, value in env.items():
            if value is None:
                env[name] = ""  # `NAME:` with nothing after it
            elif isinstance(value, bool):
                env[name] = "True" if value else "False"  # Python's str(), as LiteLLM's proxy writes it
            elif isinstance(value, (int, float)):
                env[name] = str(value)
    if refused:
        return out, refused, warnings
    _map(out, warnings)
    return out, refused, warnings


def _cache_params(litellm: dict[str, Any], refused: list[Problem], warnings: list[Problem]) -> None:
    """`litellm_settings.cache_params`: its refused keys and cache types named, each with its path."""
    params = litellm.get("cache_params")
    if params is None and "cache_params" in litellm:
        litellm["cache_params"] = {}
        return
    if not isinstance(params, dict):
        return  # the schema says what is wrong with it
    for key in params:
        entry = CACHE_PARAMS.get(key)
        if entry is not None and entry.status == "refused":
            refused.append(Problem(f"litellm_settings.cache_params.{key}", refusal(entry.note)))
    kind = params.get("type")
    if isinstance(kind, str) and kind in REFUSED_CACHE_TYPES:
        what = refusal(f"{REFUSED_CACHE_TYPES[kind]} (type {kind!r}; RouteIQ serves redis and local)")
        refused.append(Problem("litellm_settings.cache_params.type", what))


def _callbacks(path: str, value: Any, refused: list[Problem], warnings: list[Problem]) -> None:
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if names is None:
        refused.append(Problem(path, "must be a list of callback names"))
        return
    for i, name in enumerate(names):
        note = ACCEPTED_CALLBACKS.get(name) if isinstance(name, str) else None
        if note is None:
            refused.append(Problem(f"{path}[{i}]", refusal(f"the {name!r} callback")))
        else:
            warnings.append(Problem(f"{path}[{i}]", f"ignored: {note}"))


def _set_default(section: dict[str, Any], key: str, value: Any, source: str, warnings: list[Problem]) -> None:
    if key in section:
        warnings.append(Problem(source, f"ignored: {key} is set where RouteIQ reads it, which wins"))
    else:
        section[key] = value


def _map(out: dict[str, Any], warnings: list[Problem]) -> None:
    litellm = out.get("litellm_settings")
    general = out.get("general_settings")
    router = out.setdefault("router_settings", {})
    routeiq = out.get("routeiq")
    if not isinstance(router, dict):
        return
    if isinstance(litellm, dict):
        moved = (
            ("num_retries", "num_retries"),
            ("request_timeout", "timeout"),
            ("fallbacks", "fallbacks"),
            ("allowed_fails", "allowed_fails"),
            ("cooldown_time", "cooldown_time"),
        )
        for src, dst in moved:
            if src in litellm:
                _set_default(router, dst, litellm.pop(src), f"litellm_settings.{src}", warnings)
        if "default_fallbacks" in litellm:
            _set_default(router, "default_fallbacks", litellm.pop("default_fallbacks"), "litellm_settings", warnings)
        if "drop_params" in litellm:
            drop = litellm.pop("drop_params")
            for entry in out.get("model_list") or []:
                params = entry.get("litellm_params") if isinstance(entry, dict) else None
                if isinstance(params, dict):
                    params.setdefault("drop_params", drop)
    if isinstance(general, dict):
        limits_src = {
            "max_request_size_mb": ("max_request_body_bytes", lambda mb: int(float(mb) * 1024 * 1024)),
            "global_max_parallel_requests": ("max_in_flight", lambda n: n),
        }
        for src, (dst, convert) in limits_src.items():
            if src in general:
                value = general.pop(src)
                if routeiq is None:
                    routeiq = out["routeiq"] = {}
                if isinstance(routeiq, dict):
                    limits = routeiq.setdefault("limits", {})
                    if isinstance(limits, dict):
                        try:
                            converted = convert(value)
                        except (TypeError, ValueError):
                            converted = value  # the schema names what is wrong with it, at its new path
                        _set_default(limits, dst, converted, f"general_settings.{src}", warnings)
    if "enable_pre_call_check" in router:
        _set_default(router, "enable_pre_call_checks", router.pop("enable_pre_call_check"), "router_settings", warnings)
    if "default_fallbacks" in router:
        defaults = router.pop("default_fallbacks")
        if isinstance(defaults, list):
            fallbacks = router.setdefault("fallbacks", [])
            if isinstance(fallbacks, list):
                covered = {k for entry in fallbacks if isinstance(entry, dict) for k in entry}
                for entry in out.get("model_list") or []:
                    name = entry.get("model_name") if isinstance(entry, dict) else None
                    if isinstance(name, str) and name not in covered and name not in defaults:
                        fallbacks.append({name: list(defaults)})
                        covered.add(name)
    for entry in out.get("model_list") or []:
        if isinstance(entry, dict) and isinstance(entry.get("litellm_params"), dict):
            for key in ("rpm", "tpm"):
                if key in entry:
                    entry["litellm_params"].setdefault(key, entry.pop(key))


_TABLES: tuple[tuple[str, str, dict[str, Key]], ...] = (
    ("Top level", "", TOP_LEVEL),
    ("`model_list[]` entries", "model_list[].", MODEL_ENTRY),
    ("`litellm_settings`", "litellm_settings.", LITELLM_SETTINGS),
    ("`litellm_settings.cache_params`", "litellm_settings.cache_params.", CACHE_PARAMS),
    ("`general_settings`", "general_settings.", GENERAL_SETTINGS),
    ("`router_settings`", "router_settings.", ROUTER_SETTINGS),
)
_INTRO = """# LiteLLM config compatibility

RouteIQ reads LiteLLM proxy `config.yaml` files. Every key LiteLLM documents is in one of four states:

- **honoured**: RouteIQ does what LiteLLM does with it;
- **mapped**: rewritten into RouteIQ's own setting (said where), with the same effect;
- **warned**: accepted with one warning line (at load, and by `routeiq-gateway check-config`): an operational
  knob of LiteLLM's own machinery (its database, health checks, logging) with no effect on what a request does;
- **refused**: a LiteLLM feature RouteIQ does not support; the config is refused, naming **every** such key of the
  file in one error, and the previous config keeps serving.

A key in none of these tables is refused as unknown. `litellm_params` of a deployment is open: its extra keys are
provider settings passed to LiteLLM as they are. An empty section (`general_settings:` with nothing under it) is
read as `{}`. Generated from `shared/routeiq_shared/litellm_compat.py` (`python -m routeiq_shared.litellm_compat`);
a test keeps this page, the tables and the config schema in step.
"""


def render_markdown() -> str:
    parts = [_INTRO]
    for title, prefix, table in _TABLES:
        parts.append(f"\n## {title}\n\n| key | status | what RouteIQ does |\n| --- | --- | --- |\n")
        for key in sorted(table):
            entry = table[key]
            note = refusal(entry.note) if entry.status == "refused" else entry.note
            parts.append(f"| `{prefix}{key}` | {entry.status} | {note} |\n")
    counts = {s: sum(1 for _, _, t in _TABLES for k in t.values() if k.status == s) for s in _STATUSES}
    parts.append("\nIn all: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".\n")
    return "".join(parts)


_STATUSES: tuple[Status, ...] = ("honoured", "mapped", "warned", "refused")


CORPUS_MARKER = "\n## LiteLLM's own configs through RouteIQ\n"  # the page's last section, written by the corpus test


def main() -> None:
    from pathlib import Path

    out = Path(__file__).resolve().parents[2] / "docs" / "litellm-compatibility.md"
    old = out.read_text() if out.exists() else ""
    corpus = old[old.index(CORPUS_MARKER) :] if CORPUS_MARKER in old else ""
    out.write_text(render_markdown() + corpus)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
