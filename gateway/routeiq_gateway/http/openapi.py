"""The OpenAPI 3 document of the gateway's public API, served at `GET /openapi.json`.

Hand-written and built once at start-up. It describes what the edge checks (admission/validate.py), not every
field a provider accepts: extra fields pass through to the upstream, so the request schemas stay open.
"""

from __future__ import annotations

from typing import Any

from routeiq_gateway.admission.validate import MAX_JSON_DEPTH


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


_ERRORS = {
    status: {"description": why, **_json(_ref("Error"))}
    for status, why in {
        "400": f"malformed JSON, nested deeper than {MAX_JSON_DEPTH} levels, or a missing or mistyped field "
        "(`param` names it)",
        "401": "missing or invalid API key",
        "404": "unknown model",
        "408": "the request body was not received in time",
        "413": "request body over the size limit",
        "429": "upstream rate limit",
        "502": "the upstream failed",
        "503": "at capacity or draining (`Retry-After`)",
        "504": "the upstream timed out",
    }.items()
}

_SAMPLING = {
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object"},
    "max_tokens": {"type": "integer", "minimum": 1},
    "max_completion_tokens": {"type": "integer", "minimum": 1},
    "n": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number"},
    "top_p": {"type": "number"},
    "presence_penalty": {"type": "number"},
    "frequency_penalty": {"type": "number"},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "ContentPart": {
        "type": "object",
        "required": ["type"],
        "description": "text, image_url, input_audio, file, refusal are checked; other types pass through",
        "properties": {
            "type": {"type": "string"},
            "text": {"type": "string"},
            "refusal": {"type": "string"},
            "image_url": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}},
                ]
            },
            "input_audio": {
                "type": "object",
                "required": ["data", "format"],
                "properties": {"data": {"type": "string"}, "format": {"type": "string"}},
            },
            "file": {"type": "object"},
        },
    },
    "Message": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string"},
            "content": {
                "oneOf": [{"type": "string"}, {"type": "array", "items": _ref("ContentPart")}, {"type": "null"}],
                "description": "null or absent only for assistant messages",
            },
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
            **_SAMPLING,
        },
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "prompt": {"oneOf": [{"type": "string"}, {"type": "array"}]},
            **_SAMPLING,
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "input": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1}]},
        },
    },
    "ResponsesRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "input": {
                "oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": {"type": "object"}}],
                "description": "text, or input items (objects)",
            },
            "instructions": {"type": "string"},
            "max_output_tokens": {"type": "integer", "minimum": 1},
            "stream": {"type": "boolean"},
            "temperature": {"type": "number"},
            "top_p": {"type": "number"},
            "tools": {"type": "array"},
        },
    },
    "MessagesRequest": {
        "type": "object",
        "description": "Anthropic's Messages API",
        "required": ["model", "max_tokens", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "max_tokens": {"type": "integer", "minimum": 1},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {
                        "role": {"enum": ["user", "assistant"]},
                        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
                    },
                },
            },
            "system": {"oneOf": [{"type": "string"}, {"type": "array"}]},
            "stream": {"type": "boolean"},
            "temperature": {"type": "number"},
            "top_k": {"type": "integer", "minimum": 1},
            "stop_sequences": {"type": "array"},
            "tools": {"type": "array"},
            "tool_choice": {"type": "object"},
        },
    },
    "AnthropicError": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "ModerationRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "input": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1}]},
        },
    },
    "ImageRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "prompt": {"type": "string", "minLength": 1},
            "n": {"type": "integer", "minimum": 1},
            "size": {"type": "string"},
            "quality": {"type": "string"},
            "response_format": {"type": "string"},
        },
    },
    "SpeechRequest": {
        "type": "object",
        "required": ["model", "input", "voice"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "input": {"type": "string", "minLength": 1},
            "voice": {"type": "string", "minLength": 1},
            "response_format": {"type": "string"},
            "speed": {"type": "number"},
        },
    },
    "TranscriptionRequest": {
        "type": "object",
        "required": ["model", "file"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "file": {"type": "string", "format": "binary", "description": "the audio, as a file part"},
            "language": {"type": "string"},
            "prompt": {"type": "string"},
            "response_format": {"type": "string"},
            "temperature": {"type": "number"},
        },
    },
    "RerankRequest": {
        "type": "object",
        "required": ["model", "query", "documents"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "query": {"type": "string", "minLength": 1},
            "documents": {"type": "array", "minItems": 1, "items": {"oneOf": [{"type": "string"}, {"type": "object"}]}},
            "top_n": {"type": "integer", "minimum": 1},
        },
    },
    "Model": {
        "type": "object",
        "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"}},
    },
    "Upstream": {"type": "object", "description": "the upstream's OpenAI-shaped answer, passed through"},
    "ModelList": {
        "type": "object",
        "properties": {"object": {"type": "string"}, "data": {"type": "array", "items": {"type": "object"}}},
    },
    "Health": {"type": "object", "properties": {"status": {"type": "string"}}},
    "FeedbackRequest": {
        "type": "object",
        "required": ["request_id", "score"],
        "additionalProperties": False,
        "properties": {
            "request_id": {"type": "string", "description": "the x-routeiq-request-id header of a routed response"},
            "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "0 bad … 1 good"},
        },
    },
    "Feedback": {
        "type": "object",
        "properties": {
            "object": {"const": "feedback"},
            "request_id": {"type": "string"},
            "score": {"type": "number"},
            "recorded": {"type": "boolean"},
        },
    },
}


def _proxied(
    summary: str, schema: str, streams: bool, answer: str = "application/json", body: str = "application/json"
) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "the upstream's answer", "content": {answer: {"schema": _ref("Upstream")}}}
    if answer != "application/json":
        ok["content"][answer] = {"schema": {"type": "string", "format": "binary"}}
    if streams:
        ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}, {"apiKey": []}],
            "requestBody": {"required": True, "content": {body: {"schema": _ref(schema)}}},
            "responses": {"200": ok, **_ERRORS},
        }
    }


def _anthropic_shaped(operation: dict[str, Any]) -> dict[str, Any]:
    """/v1/messages answers its errors as Anthropic's API does (its SDK parses that)."""
    post = operation["post"]
    post["responses"] = {
        k: v if k == "200" else {"description": v["description"], **_json(_ref("AnthropicError"))}
        for k, v in post["responses"].items()
    }
    return operation


def _health(summary: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "security": [],
            "responses": {"200": {"description": "ok", **_json(_ref("Health"))}},
        }
    }


def document() -> dict[str, Any]:
    """The whole document, a fresh dict (the app serialises it once)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "RouteIQ gateway", "version": "1", "description": "OpenAI-compatible LLM gateway"},
        "paths": {
            "/v1/chat/completions": _proxied("Chat completion", "ChatCompletionRequest", streams=True),
            "/v1/completions": _proxied("Text completion", "CompletionRequest", streams=True),
            "/v1/embeddings": _proxied("Embeddings", "EmbeddingRequest", streams=False),
            "/v1/responses": _proxied("OpenAI's Responses API", "ResponsesRequest", streams=True),
            "/v1/messages": _anthropic_shaped(_proxied("Anthropic's Messages API", "MessagesRequest", streams=True)),
            "/v1/moderations": _proxied("Moderation", "ModerationRequest", streams=False),
            "/v1/images/generations": _proxied("Image generation", "ImageRequest", streams=False),
            "/v1/audio/speech": _proxied("Text to speech (audio bytes)", "SpeechRequest", False, answer="audio/*"),
            "/v1/audio/transcriptions": _proxied(
                "Speech to text (a multipart upload)", "TranscriptionRequest", False, body="multipart/form-data"
            ),
            "/v1/rerank": _proxied("Rerank documents (where the deployment supports it)", "RerankRequest", False),
            "/v1/models": {
                "get": {
                    "summary": "The configured model names",
                    "security": [{"bearer": []}, {"apiKey": []}],
                    "responses": {
                        "200": {"description": "models", **_json(_ref("ModelList"))},
                        "401": _ERRORS["401"],
                    },
                }
            },
            "/v1/models/{id}": {
                "get": {
                    "summary": "One configured model (group or router)",
                    "security": [{"bearer": []}, {"apiKey": []}],
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "the model", **_json(_ref("Model"))},
                        "401": _ERRORS["401"],
                        "404": _ERRORS["404"],
                    },
                }
            },
            "/v1/feedback": {
                "post": {
                    "summary": "A verdict on a routed answer, joined to its routing record",
                    "security": [{"bearer": []}, {"apiKey": []}],
                    "requestBody": {"required": True, **_json(_ref("FeedbackRequest"))},
                    "responses": {
                        "200": {"description": "recorded", **_json(_ref("Feedback"))},
                        **{k: _ERRORS[k] for k in ("400", "401", "413")},
                        "404": {
                            "description": "an id this fleet did not issue to this key, past its feedback window, "
                            "or records are off",
                            **_json(_ref("Error")),
                        },
                        "503": {"description": "the spool cannot keep it now; retry", **_json(_ref("Error"))},
                    },
                }
            },
            "/health/liveness": _health("Liveness"),
            "/health/readiness": _health("Readiness (503 while draining)"),
            "/health/dependencies": _health(
                "Circuit breakers of Redis, PostgreSQL, S3 and provider deployments; the age of the config and "
                "router models on the volume and the sync agents' word on the object store"
            ),
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }
