"""The LiteLLM interfaces the translation path calls (providers/translate_litellm.py lists them).

A LiteLLM upgrade that renames, moves or re-signs any of them fails here, by name, before any request is
translated wrongly. gateway/pyproject.toml pins litellm to the minor version these were read in.
"""

from __future__ import annotations

import importlib
import inspect
import os
from importlib.metadata import version

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# (module, attribute, method or None, the parameters the translation path passes by name)
INTERFACES = [
    (
        "litellm.utils",
        "get_optional_params",
        None,
        {"model", "custom_llm_provider", "messages", "drop_params", "stream", "kwargs"},
    ),
    (
        "litellm.llms.anthropic.chat.transformation",
        "AnthropicConfig",
        "validate_environment",
        {"headers", "model", "messages", "optional_params", "litellm_params", "api_key", "api_base"},
    ),
    (
        "litellm.llms.anthropic.chat.transformation",
        "AnthropicConfig",
        "transform_request",
        {"model", "messages", "optional_params", "litellm_params", "headers"},
    ),
    (
        "litellm.llms.anthropic.chat.transformation",
        "AnthropicConfig",
        "transform_response",
        {
            "model",
            "raw_response",
            "model_response",
            "logging_obj",
            "request_data",
            "messages",
            "optional_params",
            "litellm_params",
            "encoding",
            "api_key",
            "json_mode",
        },
    ),
    (
        "litellm.llms.anthropic.chat.handler",
        "ModelResponseIterator",
        "__init__",
        {"streaming_response", "sync_stream", "json_mode", "speed", "tool_name_reverse_map"},
    ),
    ("litellm.llms.anthropic.chat.handler", "ModelResponseIterator", "chunk_parser", {"chunk"}),
    (
        "litellm.anthropic_beta_headers_manager",
        "update_request_with_filtered_beta",
        None,
        {"headers", "request_data", "provider"},
    ),
    ("litellm.types.utils", "ModelResponse", None, set()),
    # gemini/ (translate_gemini.py)
    (
        "litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini",
        "VertexLLM",
        "_get_token_and_url",
        {
            "model",
            "auth_header",
            "gemini_api_key",
            "vertex_project",
            "vertex_location",
            "vertex_credentials",
            "stream",
            "custom_llm_provider",
            "api_base",
            "should_use_v1beta1_features",
            "use_psc_endpoint_format",
        },
    ),
    (
        "litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini",
        "VertexLLM",
        "is_using_v1beta1_features",
        {"optional_params"},
    ),
    (
        "litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini",
        "VertexGeminiConfig",
        "validate_environment",
        {"headers", "model", "messages", "optional_params", "litellm_params", "api_key"},
    ),
    (
        "litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini",
        "VertexGeminiConfig",
        "transform_response",
        {
            "model",
            "raw_response",
            "model_response",
            "logging_obj",
            "request_data",
            "messages",
            "optional_params",
            "litellm_params",
            "encoding",
            "api_key",
        },
    ),
    (
        "litellm.llms.vertex_ai.gemini.transformation",
        "_transform_request_body",
        None,
        {"messages", "model", "optional_params", "custom_llm_provider", "litellm_params", "cached_content"},
    ),
    (
        "litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini",
        "ModelResponseIterator",
        "__init__",
        {"streaming_response", "sync_stream", "logging_obj"},
    ),
    (
        "litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini",
        "ModelResponseIterator",
        "chunk_parser",
        {"chunk"},
    ),
]


def test_litellm_is_the_pinned_minor_version() -> None:
    major, minor, *_ = version("litellm").split(".")
    assert (int(major), int(minor)) == (1, 97), (
        f"litellm {version('litellm')} is installed; the translation path was checked against 1.97 "
        "(gateway/pyproject.toml). Re-run tests/integration/test_translation_identity.py and update the pin."
    )


@pytest.mark.parametrize(("module", "name", "method", "params"), INTERFACES, ids=lambda v: str(v))
def test_transformation_interface_is_present(module: str, name: str, method: str | None, params: set[str]) -> None:
    mod = importlib.import_module(module)
    assert hasattr(mod, name), f"{module}.{name} is gone: the translation path calls it"
    target = getattr(mod, name)
    if method is not None:
        assert hasattr(target, method), f"{module}.{name}.{method} is gone: the translation path calls it"
        target = getattr(target, method)
    if not params:
        return
    signature = inspect.signature(target)
    missing = params - set(signature.parameters)
    assert not missing, f"{module}.{name}{'.' + method if method else ''} no longer takes {sorted(missing)}"


def test_reverse_tool_name_map_key_is_exported() -> None:
    from litellm.llms.anthropic.chat import transformation

    assert isinstance(transformation.ANTHROPIC_TOOL_NAME_REVERSE_MAP_KEY, str)
