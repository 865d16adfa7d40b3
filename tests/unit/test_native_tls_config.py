"""`litellm_params.ssl_verify` on the native path: verify on by default, off per deployment, a custom CA bundle,
and a bundle that cannot be used refused at load with its key path. The upstream is a TLS server on 127.0.0.1
with a throwaway CA (trustme)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.providers import Completed
from routeiq_gateway.providers.http1 import Pool
from routeiq_gateway.providers.native import NativeProvider
from routeiq_gateway.routing.deployments import Deployment
from routeiq_gateway.state import build_state
from routeiq_shared.config_schema import ConfigError, load_config
from routeiq_shared.egress import EgressPolicy

pytestmark = pytest.mark.timeout(20)

LOOPBACK = EgressPolicy.from_env({"ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8"})
ANSWER = b'{"id":"c1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture
async def tls_upstream(ca_file: tuple[trustme.CA, Path]) -> AsyncIterator[str]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca_file[0].issue_cert("127.0.0.1").configure_cert(ctx)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(ANSWER)
                    + ANSWER
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    server.close()


def deployments(api_base: str, *verify: Any) -> list[Deployment]:
    """One deployment per `verify` (omitted when None), built from config as a load builds them."""
    entries = []
    for i, v in enumerate(verify):
        params: dict[str, Any] = {"model": f"openai/m{i}", "api_base": api_base, "api_key": "sk-test"}
        if v is not None:
            params["ssl_verify"] = v
        entries.append({"model_name": f"g{i}", "litellm_params": params})
    state = build_state(load_config(orjson.dumps({"model_list": entries}), None, {}), created=0)
    return [state.groups[f"g{i}"][0] for i in range(len(verify))]


async def call(provider: NativeProvider, dep: Deployment) -> Completed | GatewayError:
    try:
        result = await provider.call(dep, "chat/completions", {"messages": []}, False, None)
    except GatewayError as exc:
        return exc
    assert isinstance(result, Completed)
    return result


@pytest.mark.anyio
async def test_ssl_verify_default_custom_ca_and_off(tls_upstream: str, ca_file: tuple[trustme.CA, Path]) -> None:
    default, custom, off = deployments(tls_upstream, None, str(ca_file[1]), False)
    assert (default.ssl_verify, custom.ssl_verify, off.ssl_verify) == (True, str(ca_file[1]), False)
    pool = Pool(LOOPBACK)
    provider = NativeProvider(pool)
    try:
        refused = await call(provider, default)  # the system CAs do not know the throwaway one
        assert isinstance(refused, GatewayError)
        assert (refused.status, refused.code, refused.retryable) == (502, "upstream_tls_failed", True)
        assert "certificate verify failed" in refused.message
        for dep in (custom, off):
            answered = await call(provider, dep)
            assert isinstance(answered, Completed) and answered.body == ANSWER
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("bundle", "words"), [("missing.pem", "does not exist"), ("junk.pem", "not a CA bundle"), ("", "CA bundle")]
)
def test_unusable_ca_bundle_is_refused_at_load_with_its_key_path(tmp_path: Path, bundle: str, words: str) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    verify = str(tmp_path / bundle) if bundle else ""
    with pytest.raises(ConfigError) as info:
        deployments("https://api.example.com/v1", verify)
    assert info.value.path == "model_list[0].litellm_params.ssl_verify"
    assert words in str(info.value)
