"""Which request fields are OpenAI call parameters, and which would steer a provider call elsewhere.

Both provider paths read these sets, so a field means the same on either: a call parameter reaches the upstream
(translated by LiteLLM where the provider is not OpenAI's protocol), a redirecting field is refused with a 400.
"""

from __future__ import annotations

from typing import Any

# OpenAI request parameters: what LiteLLM translates per provider, and what a deployment may default.
OPENAI_PARAMS = frozenset(
    {
        # chat
        "messages", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
        "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream",
        "stream_options", "temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls", "user",
        "functions", "function_call", "reasoning_effort", "modalities", "audio", "prediction", "service_tier",
        "top_k", "thinking",
        # completions
        "prompt", "suffix", "echo", "best_of",
        # embeddings
        "input", "dimensions", "encoding_format",
    }
)  # fmt: skip
# The request's content: never a deployment default.
_CONTENT = frozenset({"messages", "prompt", "input", "stream", "model"})
DEFAULTABLE_PARAMS = OPENAI_PARAMS - _CONTENT

# Fields that would send the call (and our provider key) somewhere else, or swap the credentials it carries. On
# the LiteLLM path they are call arguments; on the native path a proxy in front of OpenAI could read them. Only a
# deployment's config sets them.
REDIRECTING = frozenset(
    {
        "base_url", "extra_headers", "headers", "provider_specific_header", "organization", "custom_llm_provider",
        "client_id", "client_secret", "tenant_id", "region_name", "litellm_credential_name", "use_litellm_proxy",
        "use_in_pass_through", "model_list", "deployment_id",
    }
)  # fmt: skip
# api_base, api_key, api_version, …; aws_access_key_id, aws_region_name, …; vertex_credentials, …; azure_ad_token, …
REDIRECTING_PREFIXES = ("api_", "aws_", "vertex_", "azure_", "watsonx_")


# Fields that are known not to redirect: an ordinary body is cleared by one set operation (this runs per request).
_PLAIN = OPENAI_PARAMS | {"model", "metadata", "store", "web_search_options", "verbosity", "safety_identifier"}


def redirecting_fields(body: dict[str, Any]) -> list[str]:
    """The body's fields that would redirect the call or its credentials, in the order sent."""
    if _PLAIN.issuperset(body):
        return []
    return [k for k in body if k in REDIRECTING or k.startswith(REDIRECTING_PREFIXES)]
