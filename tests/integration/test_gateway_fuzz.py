"""Property-based fuzz of the public API against a real gateway process (issue 7, "Show"): whatever a client
sends to a path of /openapi.json, the gateway answers, in time, never with a 500, and every refusal in OpenAI's
error shape.

Every path a request can take is fuzzed: the native path (`fast`, `embed`), the LiteLLM path (`claude`, anthropic/
against the fake upstream's Messages API) and a virtual model (`auto`) whose signed router model reads the prompt.

hypothesis generates the bodies (schemathesis installs here, but drags in a second HTTP stack and a CLI's worth
of dependencies for what a few strategies do): near-valid requests with any field replaced by any JSON value,
arbitrary JSON, and arbitrary bytes. The budget is fixed (max_examples per test) so the module runs in well
under a minute; hypothesis prints the failing example to reproduce.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, VolumeDirs, launch_gateway
from harness.router_artifacts import keygen, write_router
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from routeiq_model_sync.registry import build_manifest
from routeiq_shared.atomic import atomic_write
from routeiq_shared.signing import load_private_key, sign_manifest

pytestmark = pytest.mark.integration

MASTER = "sk-fuzz-master"
ANSWER_WITHIN = 10.0  # seconds: longer is a hang (the fake upstream answers in milliseconds)
FUZZ = settings(
    max_examples=300,
    deadline=None,  # wall-clock per example depends on the machine; hangs are caught by ANSWER_WITHIN
    database=None,  # no .hypothesis/ directory in the tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def gw(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHandle]:
    def dep(name: str, model: str) -> dict[str, Any]:
        params = {"model": f"openai/{model}", "api_base": fake_upstream.base_url, "api_key": "sk-up"}
        return {"model_name": name, "litellm_params": params}

    claude = {
        "model_name": "claude",
        "litellm_params": {
            "model": "anthropic/claude-3-haiku-20240307",
            "api_base": fake_upstream.root_url,
            "api_key": "sk-up",
        },
    }
    config = {
        "model_list": [dep("fast", "gpt-4o-mini"), dep("embed", "text-embedding-3-small"), claude],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER},
        "routeiq": {
            "limits": {"max_request_body_bytes": 256 * 1024},
            "routers": [{"name": "auto", "artifact": "fuzz-router", "candidates": ["fast", "claude"]}],
            "records": {"enabled": True, "prompt": "text"},  # spooled on the volume (no store): /v1/feedback on
        },
    }
    root = tmp_path_factory.mktemp("gw-fuzz")
    dirs = VolumeDirs(root).create()
    # A signed router on the volume, as model-sync leaves it: `auto` requests run the prompt through it.
    keys = keygen(root / "keys")
    artifact = write_router(dirs.models_dir / "fuzz-router.pkl", "claude", "fast")
    manifest = build_manifest("fuzz-router", "v1", artifact, {}, "sha256:fuzz", 1)
    atomic_write(
        dirs.models_dir / "fuzz-router.manifest.json", sign_manifest(manifest, load_private_key(keys.private)).to_json()
    )
    handle = launch_gateway(dirs, config, env={"MODEL_SIGNING_PUBLIC_KEY": str(keys.public)})
    try:
        handle.wait_for_log(lambda r: r.get("event") == "model_load" and r.get("result") == "ok", timeout=30)
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def http(gw: GatewayHandle, fake_upstream: FakeUpstream) -> Iterator[httpx.Client]:
    fake_upstream.reset()  # no rules left by other modules: the upstream behaves, the gateway is under test
    headers = {"authorization": f"Bearer {MASTER}", "content-type": "application/json"}
    with httpx.Client(base_url=gw.base_url, headers=headers, timeout=ANSWER_WITHIN, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def post_paths(http: httpx.Client) -> list[str]:
    doc = http.get("/openapi.json").json()
    return sorted(path for path, ops in doc["paths"].items() if "post" in ops)


# -- strategies --------------------------------------------------------------------------------------

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
any_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=15,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a well-formed value, sometimes anything at all."""
    return st.one_of(valid, valid, valid, any_json)


part = st.fixed_dictionaries(
    {"type": maybe(st.sampled_from(["text", "image_url", "input_audio", "file", "refusal", "new_kind"]))},
    optional={
        "text": maybe(st.text(max_size=30)),
        "image_url": maybe(st.fixed_dictionaries({"url": maybe(st.text(max_size=20))}) | st.text(max_size=20)),
        "input_audio": maybe(st.fixed_dictionaries({"data": st.text(max_size=8), "format": st.just("wav")})),
        "file": any_json,
        "refusal": maybe(st.text(max_size=10)),
    },
)
message = st.fixed_dictionaries(
    {"role": maybe(st.sampled_from(["system", "user", "assistant", "tool", "developer"]))},
    optional={
        "content": maybe(st.text(max_size=40) | st.lists(part, max_size=3) | st.none()),
        "name": any_json,
        "tool_calls": any_json,
    },
)
sampling = {
    "stream": maybe(st.booleans()),
    "stream_options": maybe(st.fixed_dictionaries({"include_usage": st.booleans()})),
    "max_tokens": maybe(st.integers(min_value=-2, max_value=50)),
    "n": maybe(st.integers(min_value=0, max_value=2)),
    "temperature": maybe(st.floats(min_value=0, max_value=2)),
    "top_p": any_json,
    "user": any_json,
    "tools": any_json,
    "response_format": any_json,
}
model = maybe(st.sampled_from(["fast", "claude", "auto", "embed", "unknown-model", ""]))
bodies = {
    "/v1/chat/completions": st.fixed_dictionaries(
        {"model": model, "messages": maybe(st.lists(message, min_size=1, max_size=3))}, optional=sampling
    ),
    "/v1/completions": st.fixed_dictionaries(
        {"model": model, "prompt": maybe(st.text(max_size=30) | st.lists(st.text(max_size=5), max_size=3))},
        optional=sampling,
    ),
    "/v1/embeddings": st.fixed_dictionaries(
        {"model": model, "input": maybe(st.text(max_size=30) | st.lists(st.text(max_size=8), min_size=1, max_size=3))},
        optional={"encoding_format": maybe(st.sampled_from(["float", "base64"])), "dimensions": any_json},
    ),
    "/v1/responses": st.fixed_dictionaries(
        {
            "model": model,
            "input": maybe(
                st.text(max_size=30)
                | st.lists(
                    st.fixed_dictionaries(
                        {"role": maybe(st.sampled_from(["user", "assistant"]))},
                        optional={"content": maybe(st.text(max_size=20) | st.lists(part, max_size=2))},
                    ),
                    max_size=3,
                )
            ),
        },
        optional={
            "stream": maybe(st.booleans()),
            "instructions": maybe(st.text(max_size=20)),
            "max_output_tokens": maybe(st.integers(min_value=-1, max_value=50)),
            "temperature": maybe(st.floats(min_value=0, max_value=2)),
            "tools": any_json,
            "text": any_json,
        },
    ),
    "/v1/messages": st.fixed_dictionaries(
        {
            "model": model,
            "max_tokens": maybe(st.integers(min_value=-1, max_value=50)),
            "messages": maybe(
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "role": maybe(st.sampled_from(["user", "assistant"])),
                            "content": maybe(st.text(max_size=20) | st.lists(part, max_size=2)),
                        }
                    ),
                    min_size=1,
                    max_size=3,
                )
            ),
        },
        optional={
            "stream": maybe(st.booleans()),
            "system": maybe(st.text(max_size=20)),
            "temperature": maybe(st.floats(min_value=0, max_value=1)),
            "top_k": any_json,
            "stop_sequences": any_json,
            "tools": any_json,
        },
    ),
    "/v1/moderations": st.fixed_dictionaries(
        {"model": model, "input": maybe(st.text(max_size=30) | st.lists(st.text(max_size=8), min_size=1, max_size=3))}
    ),
    "/v1/images/generations": st.fixed_dictionaries(
        {"model": model, "prompt": maybe(st.text(max_size=30))},
        optional={
            "n": maybe(st.integers(min_value=0, max_value=2)),
            "size": maybe(st.sampled_from(["256x256", "1024x1024"])),
            "response_format": maybe(st.sampled_from(["url", "b64_json"])),
        },
    ),
    "/v1/audio/speech": st.fixed_dictionaries(
        {"model": model, "input": maybe(st.text(max_size=30)), "voice": maybe(st.sampled_from(["alloy", "echo"]))},
        optional={"speed": maybe(st.floats(min_value=0.25, max_value=4)), "response_format": any_json},
    ),
    # Sent as a multipart form (see post_body): text fields and, maybe, the file.
    "/v1/audio/transcriptions": st.fixed_dictionaries(
        {"model": maybe(st.sampled_from(["fast", "claude", "auto", "unknown-model", ""]))},
        optional={
            "file": st.binary(max_size=300),
            "language": st.text(max_size=5),
            "response_format": st.sampled_from(["json", "text"]),
        },
    ),
    "/v1/rerank": st.fixed_dictionaries(
        {
            "model": model,
            "query": maybe(st.text(max_size=20)),
            "documents": maybe(st.lists(st.text(max_size=20) | any_json, min_size=1, max_size=4)),
        },
        optional={"top_n": maybe(st.integers(min_value=0, max_value=5))},
    ),
    "/v1/feedback": st.fixed_dictionaries(
        {},
        optional={
            "request_id": maybe(st.text(max_size=50) | st.just("rq_" + "0" * 41)),
            "score": maybe(st.floats(min_value=-1, max_value=2) | st.integers(min_value=-1, max_value=2)),
        },
    ),
}


def deep_body(depth: int) -> bytes:
    """A body valid for every endpoint but for one field nested `depth` levels deep."""
    valid = b'{"model":"auto","messages":[{"role":"user","content":"x"}],"prompt":"x","input":"x","x":'
    return valid + b"[" * depth + b"]" * depth + b"}"


# -- the properties ----------------------------------------------------------------------------------


def assert_sound(response: httpx.Response, sent: Any, path: str = "") -> None:
    assert response.status_code != 500, f"500 for {sent!r}: {response.text}"
    if response.status_code == 200:
        return
    if path == "/v1/messages":  # Anthropic's ingress refuses in Anthropic's shape (its SDK parses that)
        body = response.json()
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, (sent, body)
        return
    error = response.json()["error"]  # every refusal is OpenAI's error shape
    assert set(error) == {"message", "type", "param", "code"}, (sent, error)


def post_body(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    """JSON, but a multipart form for the upload endpoint, as its clients send it."""
    if path != "/v1/audio/transcriptions":
        return http.post(path, content=json.dumps(body, allow_nan=False))
    fields = {k: str(v) for k, v in body.items() if k != "file"}
    files = {"file": ("audio.wav", body["file"], "audio/wav")} if "file" in body else {"unrelated": ("x", b"x")}
    # Not through `http`: its default JSON content type would win over the form's own (with its boundary).
    auth = {"authorization": http.headers["authorization"]}
    return httpx.post(f"{http.base_url}{path}", headers=auth, data=fields, files=files, timeout=ANSWER_WITHIN)


def test_openapi_document_describes_the_served_paths(http: httpx.Client, post_paths: list[str]) -> None:
    doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert post_paths == sorted(bodies)
    for path, ops in doc["paths"].items():
        for method in ops:
            path = path.replace("{id}", "fast")  # a path parameter: a model the gateway serves
            response = http.request(method.upper(), path, content=b"{}" if method == "post" else None)
            assert response.status_code not in (404, 405), (method, path)


@FUZZ
@given(data=st.data())
def test_near_valid_requests_never_500_nor_hang(http: httpx.Client, post_paths: list[str], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(post_paths), label="path")
    body = data.draw(bodies[path], label="body")
    assert_sound(post_body(http, path, body), body, path)


@FUZZ
@given(data=st.data())
def test_arbitrary_json_and_bytes_never_500_nor_hang(
    http: httpx.Client, post_paths: list[str], data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(post_paths), label="path")
    raw = data.draw(
        st.one_of(
            any_json.map(lambda v: json.dumps(v, allow_nan=False).encode()),
            st.binary(max_size=200),
            st.integers(min_value=1, max_value=1100).map(deep_body),
        ),
        label="raw",
    )
    assert_sound(http.post(path, content=raw), raw, path)


text_part = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=60)})
well_formed = st.one_of(
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(["fast", "claude", "auto"]),
            "messages": st.lists(
                st.fixed_dictionaries(
                    {
                        "role": st.sampled_from(["system", "user", "assistant"]),
                        "content": st.text(max_size=200) | st.lists(text_part, min_size=1, max_size=3),
                    }
                ),
                min_size=1,
                max_size=4,
            ).map(lambda msgs: [*msgs, {"role": "user", "content": "and so?"}]),
        },
        optional={
            "stream": st.booleans(),
            "max_tokens": st.integers(min_value=1, max_value=100),
            "temperature": st.floats(min_value=0, max_value=2),
            "stop": st.lists(st.text(min_size=1, max_size=5), max_size=4),
            "user": st.text(max_size=20),
        },
    ).map(lambda body: ("/v1/chat/completions", body)),
    st.fixed_dictionaries(
        {
            "model": st.just("embed"),
            "input": st.text(min_size=1, max_size=100) | st.lists(st.text(min_size=1), min_size=1),
        }
    ).map(lambda body: ("/v1/embeddings", body)),
)


@settings(FUZZ, max_examples=120)
@given(request=well_formed)
def test_well_formed_requests_with_any_text_reach_every_path(http: httpx.Client, request: tuple[str, Any]) -> None:
    """Valid shapes, fuzzed text (any unicode, empty strings, control characters), on every provider path."""
    path, body = request
    assert_sound(http.post(path, content=json.dumps(body)), body)


def test_the_fuzz_reached_every_path(http: httpx.Client) -> None:
    """Runs after the properties (file order): the router read prompts and both provider paths answered, so the
    properties above were checked there too, not only on the native path."""
    families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
    decisions = [s for s in families["routeiq_router_decisions"].samples if s.name.endswith("_total")]
    assert any(s.labels["reason"] == "model" and s.value > 0 for s in decisions), decisions
    served = {
        s.labels["model"]
        for s in families["routeiq_requests"].samples
        if s.name.endswith("_total") and s.labels["status"] == "200" and s.value > 0
    }
    assert {"fast", "claude", "auto", "embed"} <= served, served
