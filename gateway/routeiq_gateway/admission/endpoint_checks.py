"""Body checks for the endpoints beyond chat, completions and embeddings (Responses, Anthropic Messages,
moderations, images, audio, rerank): what the edge can tell is wrong before any upstream is asked.

As in validate.py, a missing or mistyped field gets a 400 naming it (`param`), as OpenAI (and Anthropic) answer.
Fields the checks do not know pass through: the upstream judges those.
"""

from __future__ import annotations

from typing import Any

from routeiq_gateway.http.errors import bad_request
from routeiq_gateway.http.multipart import Upload


def check_model_and_stream(body: dict[str, Any]) -> tuple[str, bool]:
    model = body.get("model")
    if model is None:
        raise bad_request("'model' is required.", "model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' must be a non-empty string.", "model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", "stream")
    _expect(body, "user", str, "a string")
    return model, bool(stream)


def _expect(body: dict[str, Any], name: str, kinds: type | tuple[type, ...], what: str) -> None:
    """An optional field: absent, null, or of `kinds` (never a boolean where a number is meant)."""
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
        raise bad_request(f"'{name}' must be {what}.", name)


def _required(body: dict[str, Any], name: str, kinds: type | tuple[type, ...], what: str) -> Any:
    """A required field: present, of `kinds` and not empty (a 400 naming it otherwise)."""
    value = body.get(name)
    if value is None:
        raise bad_request(f"'{name}' is required.", name)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value:
        raise bad_request(f"'{name}' must be {what}.", name)
    return value


def _positive_int(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise bad_request(f"'{name}' must be a positive integer.", name)


def check_responses(body: dict[str, Any]) -> tuple[str, bool]:
    model, stream = check_model_and_stream(body)
    data = _required(body, "input", (str, list), "a non-empty string or array of input items")
    if isinstance(data, list):
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise bad_request(f"'input[{i}]' must be an object (an input item).", f"input[{i}]")
    _expect(body, "instructions", str, "a string")
    _positive_int(body, "max_output_tokens")
    for name in ("tools", "include"):
        _expect(body, name, list, "an array")
    for name in ("text", "reasoning", "metadata"):
        _expect(body, name, dict, "an object")
    for name in ("temperature", "top_p"):
        _expect(body, name, (int, float), "a number")
    _expect(body, "previous_response_id", str, "a string")
    return model, stream


def check_messages(body: dict[str, Any]) -> tuple[str, bool]:
    """Anthropic's Messages API: `model`, `max_tokens` and a non-empty `messages` are required."""
    model, stream = check_model_and_stream(body)
    _required(body, "max_tokens", int, "a positive integer")
    _positive_int(body, "max_tokens")
    messages = _required(body, "messages", list, "a non-empty array")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise bad_request(f"'messages[{i}]' must be an object.", f"messages[{i}]")
        if msg.get("role") not in ("user", "assistant"):
            raise bad_request(f"'messages[{i}].role' must be 'user' or 'assistant'.", f"messages[{i}].role")
        content = msg.get("content")
        if isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                    where = f"messages[{i}].content[{j}]"
                    raise bad_request(f"'{where}' must be an object with a string 'type'.", where)
        elif not isinstance(content, str):
            where = f"messages[{i}].content"
            raise bad_request(f"'{where}' must be a string or an array of content blocks.", where)
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise bad_request("'system' must be a string or an array of text blocks.", "system")
    _expect(body, "stop_sequences", list, "an array of strings")
    _expect(body, "tools", list, "an array")
    _expect(body, "tool_choice", dict, "an object")
    _expect(body, "metadata", dict, "an object")
    _positive_int(body, "top_k")
    for name in ("temperature", "top_p"):
        _expect(body, name, (int, float), "a number")
    return model, stream


def _not_streamed(body: dict[str, Any], what: str) -> None:
    if body.get("stream"):
        raise bad_request(f"{what} cannot be streamed here.", "stream")


def check_moderations(body: dict[str, Any]) -> tuple[str, bool]:
    model, _ = check_model_and_stream(body)
    _required(body, "input", (str, list), "a non-empty string or array")
    _not_streamed(body, "Moderations")
    return model, False


def check_images(body: dict[str, Any]) -> tuple[str, bool]:
    model, _ = check_model_and_stream(body)
    _required(body, "prompt", str, "a non-empty string")
    _positive_int(body, "n")
    for name in ("size", "quality", "response_format", "style"):
        _expect(body, name, str, "a string")
    _not_streamed(body, "Image generation")
    return model, False


def check_speech(body: dict[str, Any]) -> tuple[str, bool]:
    model, _ = check_model_and_stream(body)
    for name in ("input", "voice"):
        _required(body, name, str, "a non-empty string")
    _expect(body, "speed", (int, float), "a number")
    _expect(body, "response_format", str, "a string")
    _not_streamed(body, "Speech")
    return model, False


def check_transcriptions(body: dict[str, Any]) -> tuple[str, bool]:
    """A parsed multipart form (http/multipart.py): form fields are strings, the upload an Upload."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (a form field).", "model")
    upload = body.get("file")
    if upload is None:
        raise bad_request("'file' is required: send the audio as a multipart file field named 'file'.", "file")
    if not isinstance(upload, Upload):
        raise bad_request("'file' must be a file upload (a part with a filename), not a text field.", "file")
    if not upload.data:
        raise bad_request("'file' is empty.", "file")
    for name, value in body.items():
        if name != "file" and isinstance(value, Upload):
            raise bad_request(f"'{name}' must be a text field; only 'file' takes an upload.", name)
    if body.get("stream") in ("true", "True", "1"):
        raise bad_request("Transcriptions cannot be streamed here.", "stream")
    return model, False


def check_rerank(body: dict[str, Any]) -> tuple[str, bool]:
    model, _ = check_model_and_stream(body)
    _required(body, "query", str, "a non-empty string")
    docs = _required(body, "documents", list, "a non-empty array")
    for i, doc in enumerate(docs):
        if not isinstance(doc, str | dict):
            raise bad_request(f"'documents[{i}]' must be a string or an object.", f"documents[{i}]")
    _positive_int(body, "top_n")
    _not_streamed(body, "Rerank")
    return model, False


SURFACE_CHECKS = {
    "responses": check_responses,
    "messages": check_messages,
    "moderations": check_moderations,
    "images/generations": check_images,
    "audio/speech": check_speech,
    "audio/transcriptions": check_transcriptions,
    "rerank": check_rerank,
}
