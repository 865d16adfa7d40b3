"""The API surface beyond chat (issue 10, Build 2) with the official `openai` and `anthropic` SDKs as clients,
against a real gateway process and the fake upstream, on both provider paths:

  native   openai/ deployments (the gateway's own HTTP client), and anthropic/ on /v1/messages
  LiteLLM  azure/ deployments (the fake upstream answers Azure's paths), anthropic/ on /v1/responses, cohere/ for
           rerank, and openai/ on /v1/messages (LiteLLM translates Anthropic's protocol)

Every test asserts what reached the upstream (its request log) as well as what the client got back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from harness.fake_upstream import FAKE_PNG, speech_bytes
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, VolumeDirs, launch_gateway

pytestmark = pytest.mark.integration

MASTER = "sk-surface-master"
DEMO = "This is a demo response from RouteIQ's fake provider."
AZURE = {"api_version": "2024-10-21"}
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def gw(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHandle]:
    def dep(name: str, model: str, base: str, **extra: Any) -> dict[str, Any]:
        return {"model_name": name, "litellm_params": {"model": model, "api_base": base, "api_key": "sk-up", **extra}}

    v1, root = fake_upstream.base_url, fake_upstream.root_url
    config = {
        "model_list": [
            dep("gpt", "openai/gpt-4o-mini", v1),
            dep("gpt-azure", "azure/gpt-4o-mini", root, **AZURE),
            dep("claude", "anthropic/claude-3-haiku-20240307", root),
            dep("mod", "openai/omni-moderation-latest", v1),
            dep("mod-litellm", "azure/omni-moderation-latest", root, **AZURE),
            dep("img", "openai/dall-e-3", v1),
            dep("img-azure", "azure/dall-e-3", root, **AZURE),
            dep("tts", "openai/tts-1", v1),
            dep("tts-azure", "azure/tts-1", root, **AZURE),
            dep("whisper", "openai/whisper-1", v1),
            dep("whisper-azure", "azure/whisper-1", root, **AZURE),
            dep("rerank", "hosted_vllm/bge-reranker", v1),
            dep("rerank-cohere", "cohere/rerank-english-v3.0", root),
        ],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER},
        "routeiq": {
            "limits": {"max_request_body_bytes": BODY_LIMIT},
            "routers": [{"name": "auto", "strategy": "random", "candidates": ["gpt", "claude"]}],
        },
    }
    handle = launch_gateway(VolumeDirs(tmp_path_factory.mktemp("gw-surface")).create(), config)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def oai(gw: GatewayHandle, fresh_upstream: FakeUpstream) -> openai.OpenAI:
    return gw.openai_client(api_key=MASTER)


@pytest.fixture
def claude_sdk(gw: GatewayHandle, fresh_upstream: FakeUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base_url, api_key=MASTER, max_retries=0, timeout=30.0)


def only_request(upstream: FakeUpstream, suffix: str) -> dict[str, Any]:
    hits = [r for r in upstream.requests() if r["path"].endswith(suffix)]
    assert len(hits) == 1, [r["path"] for r in upstream.requests()]
    return hits[0]


# -- models ------------------------------------------------------------------------------------------


def test_models_retrieve_one_and_unknown(oai: openai.OpenAI) -> None:
    assert oai.models.retrieve("gpt").id == "gpt"
    assert oai.models.retrieve("auto").id == "auto"  # routers are models too
    with pytest.raises(openai.NotFoundError) as err:
        oai.models.retrieve("nope")
    assert err.value.code == "model_not_found"


# -- /v1/responses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "path", "upstream_path"),
    [("gpt", "native", "/v1/responses"), ("gpt-azure", "litellm", "/openai/responses")],
)
def test_responses_on_both_paths(
    oai: openai.OpenAI, fresh_upstream: FakeUpstream, model: str, path: str, upstream_path: str
) -> None:
    raw = oai.responses.with_raw_response.create(model=model, input="Say hello", instructions="Be brief")
    reply = raw.parse()
    assert reply.output_text == DEMO
    assert raw.headers["x-routeiq-provider-path"] == path
    sent = only_request(fresh_upstream, upstream_path)
    assert sent["body"]["input"] == "Say hello"
    assert sent["body"]["model"] == "gpt-4o-mini"  # the deployment's model, not the group's name


@pytest.mark.parametrize("model", ["gpt", "gpt-azure", "claude"])
def test_responses_stream_on_every_path(oai: openai.OpenAI, model: str) -> None:
    """anthropic/ on /v1/responses: LiteLLM turns the Responses call into Anthropic's Messages and back."""
    deltas, kinds = [], []
    with oai.responses.create(model=model, input=[{"role": "user", "content": "hi"}], stream=True) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    assert "".join(deltas) == DEMO
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


def test_responses_usage_is_counted(gw: GatewayHandle, oai: openai.OpenAI) -> None:
    before = gw_tokens(gw, "gpt")
    oai.responses.create(model="gpt", input="one two three")
    assert gw_tokens(gw, "gpt") - before == len(DEMO.split()) + 3  # completion + prompt words (fake's tokens)


def gw_tokens(gw: GatewayHandle, model: str) -> float:
    text = httpx.get(f"{gw.base_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("routeiq_tokens_total{") and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_responses_with_a_router_reads_the_input(oai: openai.OpenAI) -> None:
    raw = oai.responses.with_raw_response.create(model="auto", input="route me")
    assert raw.headers["x-routeiq-router"] == "auto"
    assert raw.headers["x-routeiq-model"] in ("gpt", "claude")
    assert raw.parse().output_text == DEMO


# -- /v1/responses: bad input --------------------------------------------------------------------------


def test_responses_unknown_model_is_a_404_naming_it(oai: openai.OpenAI, fresh_upstream: FakeUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        oai.responses.create(model="no-such-model", input="hi")
    assert "no-such-model" in err.value.message and err.value.code == "model_not_found"
    assert fresh_upstream.requests() == []


@pytest.mark.parametrize("bad", [42, {"role": "user"}, True, ["not an item"], ""])
def test_responses_bad_input_type_is_a_400_naming_the_param(
    gw: GatewayHandle, fresh_upstream: FakeUpstream, bad: Any
) -> None:
    client = gw.openai_client(api_key=MASTER)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt", input=bad)
    body = err.value.body
    assert isinstance(body, dict) and body["param"].startswith("input"), body
    assert fresh_upstream.requests() == []


def test_responses_body_over_the_limit_is_a_413(oai: openai.OpenAI, fresh_upstream: FakeUpstream) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        oai.responses.create(model="gpt", input="x " * BODY_LIMIT)
    assert err.value.status_code == 413 and err.value.code == "request_too_large"
    assert fresh_upstream.requests() == []


# -- /v1/messages (Anthropic's SDK) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "path", "upstream_path"), [("claude", "native", "/v1/messages"), ("gpt", "litellm", "/v1/responses")]
)
def test_messages_on_both_paths(
    claude_sdk: anthropic.Anthropic, fresh_upstream: FakeUpstream, model: str, path: str, upstream_path: str
) -> None:
    raw = claude_sdk.messages.with_raw_response.create(
        model=model, max_tokens=50, system="Be brief", messages=[{"role": "user", "content": "Say hello"}]
    )
    reply = raw.parse()
    assert reply.content[0].type == "text" and reply.content[0].text == DEMO
    assert reply.usage.output_tokens == len(DEMO.split())
    assert raw.headers["x-routeiq-provider-path"] == path
    sent = only_request(fresh_upstream, upstream_path)
    if path == "native":  # the body goes as the client sent it, the model rewritten, our key in x-api-key
        assert sent["body"]["system"] == "Be brief" and sent["body"]["model"] == "claude-3-haiku-20240307"
        assert sent["headers"]["x-api-key"] == "sk-up" and "anthropic-version" in sent["headers"]
    assert MASTER not in str(sent["headers"])


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_messages_stream_on_both_paths(claude_sdk: anthropic.Anthropic, model: str) -> None:
    with claude_sdk.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEMO
    assert final.stop_reason == "end_turn"


def test_messages_errors_have_anthropics_shape(claude_sdk: anthropic.Anthropic, fresh_upstream: FakeUpstream) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude_sdk.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "The model 'nope' does not exist on this gateway."},
    }
    with pytest.raises(anthropic.BadRequestError) as bad:  # the SDK's own check would stop this one: sent raw
        claude_sdk.post(
            "/v1/messages", body={"model": "claude", "messages": [{"role": "user", "content": "x"}]}, cast_to=object
        )
    assert bad.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "'max_tokens' is required."},
    }
    wrong_key = anthropic.Anthropic(base_url=claude_sdk.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong_key.messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    fresh_upstream.add_rule(path="/v1/messages", status=429, retry_after="7", times=1)
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude_sdk.messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.body["type"] == "error"  # type: ignore[index]


def test_messages_stream_error_in_band_is_anthropic_shaped(
    claude_sdk: anthropic.Anthropic, fresh_upstream: FakeUpstream
) -> None:
    fresh_upstream.add_rule(path="/v1/messages", action="reset_mid_stream", chunks=3, times=1)
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        claude_sdk.messages.stream(
            model="claude", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        for _ in stream.text_stream:
            pass
    assert "Upstream" in str(err.value)


def test_messages_with_a_router(claude_sdk: anthropic.Anthropic) -> None:
    raw = claude_sdk.messages.with_raw_response.create(
        model="auto", max_tokens=20, messages=[{"role": "user", "content": "route me"}]
    )
    assert raw.headers["x-routeiq-router"] == "auto"
    assert raw.parse().content[0].text == DEMO  # type: ignore[union-attr]


# -- moderations, images, audio, rerank ---------------------------------------------------------------


@pytest.mark.parametrize(("model", "path"), [("mod", "native"), ("mod-litellm", "litellm")])
def test_moderations_on_both_paths(oai: openai.OpenAI, model: str, path: str) -> None:
    raw = oai.moderations.with_raw_response.create(model=model, input=["fine words", "a forbidden thing"])
    assert raw.headers["x-routeiq-provider-path"] == path
    assert [r.flagged for r in raw.parse().results] == [False, True]


@pytest.mark.parametrize(("model", "path"), [("img", "native"), ("img-azure", "litellm")])
def test_images_on_both_paths(oai: openai.OpenAI, fresh_upstream: FakeUpstream, model: str, path: str) -> None:
    raw = oai.images.with_raw_response.generate(model=model, prompt="a red cube", n=2, response_format="b64_json")
    images = raw.parse()
    assert raw.headers["x-routeiq-provider-path"] == path
    assert [i.b64_json for i in images.data or []] == [FAKE_PNG, FAKE_PNG]
    assert only_request(fresh_upstream, "/images/generations")["body"]["prompt"] == "a red cube"


@pytest.mark.parametrize(("model", "path"), [("tts", "native"), ("tts-azure", "litellm")])
def test_speech_bytes_arrive_untouched_on_both_paths(oai: openai.OpenAI, model: str, path: str) -> None:
    raw = oai.audio.speech.with_raw_response.create(model=model, input="read this aloud", voice="alloy")
    assert raw.headers["x-routeiq-provider-path"] == path
    assert raw.headers["content-type"].startswith("audio/mpeg")
    assert raw.content == speech_bytes("read this aloud")


@pytest.mark.parametrize(("model", "path"), [("whisper", "native"), ("whisper-azure", "litellm")])
def test_transcriptions_multipart_on_both_paths(
    oai: openai.OpenAI, fresh_upstream: FakeUpstream, model: str, path: str
) -> None:
    audio = b"RIFF" + bytes(range(256)) * 40  # binary, with CR LF and boundary-like bytes in it
    raw = oai.audio.transcriptions.with_raw_response.create(
        model=model, file=("talk.wav", audio, "audio/wav"), language="en"
    )
    assert raw.headers["x-routeiq-provider-path"] == path
    assert raw.parse().text == f"transcribed talk.wav of {len(audio)} bytes"
    sent = only_request(fresh_upstream, "/audio/transcriptions")["body"]
    assert sent["file"]["size"] == len(audio) and sent["language"] == "en"
    assert sent["model"] == "whisper-1"


def test_transcription_without_a_file_is_a_400(gw: GatewayHandle, fresh_upstream: FakeUpstream) -> None:
    response = httpx.post(
        f"{gw.base_url}/v1/audio/transcriptions",
        headers={"authorization": f"Bearer {MASTER}"},
        data={"model": "whisper", "language": "en"},
        files={"other": ("x.txt", b"not the file field", "text/plain")},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"
    no_form = httpx.post(
        f"{gw.base_url}/v1/audio/transcriptions",
        headers={"authorization": f"Bearer {MASTER}"},
        json={"model": "whisper"},
        timeout=10,
    )
    assert no_form.status_code == 400 and no_form.json()["error"]["code"] == "invalid_content_type"
    assert fresh_upstream.requests() == []


@pytest.mark.parametrize(("model", "path"), [("rerank", "native"), ("rerank-cohere", "litellm")])
def test_rerank_on_both_paths(oai: openai.OpenAI, model: str, path: str) -> None:
    raw = oai.post(
        "/rerank",
        body={"model": model, "query": "red cube", "documents": ["a blue ball", "a red cube"], "top_n": 1},
        cast_to=httpx.Response,
    )
    assert raw.headers["x-routeiq-provider-path"] == path
    assert [r["index"] for r in raw.json()["results"]] == [1]


def test_routers_are_refused_where_there_is_no_prompt(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai.images.generate(model="auto", prompt="x")
    assert "router" in err.value.message and err.value.param == "model"  # type: ignore[attr-defined]


def test_files_and_batches_say_out_of_scope(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as files:
        oai.files.list()
    assert "out of scope" in files.value.message
    with pytest.raises(openai.NotFoundError) as batches:
        oai.batches.retrieve("batch_1")
    assert "out of scope" in batches.value.message
