"""Outbound destinations: metadata and link-local addresses in every spelling, private ranges unless allow-listed."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from routeiq_shared.egress import (
    EgressError,
    EgressPolicy,
    check_url_literal,
    parse_ip,
    parse_networks,
)
from routeiq_shared.sidecar import env_url

METADATA_SPELLINGS = [
    "169.254.169.254",
    "2852039166",  # decimal
    "0xa9fea9fe",  # hex
    "0xA9.0xFE.0xA9.0xFE",
    "0251.0376.0251.0376",  # octal
    "169.254.43518",  # short form
    "[::ffff:169.254.169.254]",  # IPv4-mapped IPv6
    "[::ffff:a9fe:a9fe]",
    "[fd00:ec2::254]",
    "[fe80::1%25eth0]",
    "metadata.google.internal",
    "METADATA.GOOGLE.INTERNAL.",
]


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_metadata_hosts_are_refused_as_written(host: str) -> None:
    with pytest.raises(EgressError, match="metadata"):
        check_url_literal(f"http://{host}/latest/meta-data/")


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "example.com/v1", "http:///v1", "unix:///tmp/sock", "free text", "http://h:0/"]
)
def test_urls_that_cannot_work_are_refused(url: str) -> None:
    with pytest.raises(EgressError):
        check_url_literal(url)


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "http://127.0.0.1:4010/v1", "http://[::1]:8000"])
def test_ordinary_urls_pass_the_literal_check(url: str) -> None:
    check_url_literal(url)


def test_hostnames_are_not_mistaken_for_ip_literals() -> None:
    assert parse_ip("api.openai.com") is None
    assert parse_ip("deadbeef.example") is None
    assert parse_ip("2852039166") == ipaddress.IPv4Address("169.254.169.254")


def test_private_and_loopback_need_an_allow_list() -> None:
    closed = EgressPolicy()
    for addr in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "100.64.0.1", "::1", "fd12::1", "0.0.0.0"):
        with pytest.raises(EgressError, match="not allow-listed"):
            closed.check_address(ipaddress.ip_address(addr))
    closed.check_address(ipaddress.ip_address("8.8.8.8"))
    opened = EgressPolicy(parse_networks(["127.0.0.0/8", "10.0.0.0/8"]))
    opened.check_address(ipaddress.ip_address("127.0.0.1"))
    opened.check_address(ipaddress.ip_address("10.1.2.3"))
    opened.check_address(ipaddress.ip_address("::ffff:127.0.0.1"))  # mapped form of an allowed address
    with pytest.raises(EgressError, match="not allow-listed"):
        opened.check_address(ipaddress.ip_address("192.168.0.1"))


def test_an_allow_list_never_opens_metadata() -> None:
    policy = EgressPolicy(parse_networks(["0.0.0.0/0", "::/0"]))
    with pytest.raises(EgressError, match="metadata"):
        policy.check_address(ipaddress.ip_address("169.254.169.254"))
    with pytest.raises(EgressError, match="metadata"):
        policy.check_address(ipaddress.ip_address("::ffff:169.254.169.254"))


def test_resolution_is_checked_after_dns() -> None:
    policy = EgressPolicy(parse_networks(["127.0.0.0/8", "::1/128"]))
    assert asyncio.run(policy.resolve("localhost", 80))  # resolves to loopback, which is allowed here
    with pytest.raises(EgressError):
        asyncio.run(EgressPolicy().resolve("localhost", 80))
    with pytest.raises(EgressError, match="metadata"):
        asyncio.run(policy.resolve("0251.0376.0251.0376", 80))
    assert asyncio.run(policy.resolve("2130706433", 80)) == [(2, "127.0.0.1")]  # decimal loopback, allowed


def test_allow_list_from_env_names_a_bad_entry() -> None:
    with pytest.raises(ValueError, match="not-a-net"):
        EgressPolicy.from_env({"ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8,not-a-net"})


# -- outbound URLs read from settings: the sidecars' admin, S3 and Redis endpoints, the OTLP exporter ----------------


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/", "http://0251.0376.0251.0376:4001", "http://[fd00:ec2::254]/"]
)
def test_a_url_setting_naming_a_metadata_address_stops_the_agent_naming_the_variable(url: str) -> None:
    with pytest.raises(SystemExit) as info:
        env_url({"GATEWAY_ADMIN_URL": url}, "GATEWAY_ADMIN_URL")
    assert isinstance(info.value.code, str)
    assert info.value.code.startswith("GATEWAY_ADMIN_URL: ") and "metadata" in info.value.code


def test_url_settings_that_work_pass_and_unset_is_none() -> None:
    assert env_url({}, "GATEWAY_ADMIN_URL") is None
    assert env_url({"X": "http://127.0.0.1:4001"}, "X") == "http://127.0.0.1:4001"
    assert env_url({"R": "unix:///run/redis.sock"}, "R", ("redis", "rediss", "unix")) == "unix:///run/redis.sock"
    with pytest.raises(SystemExit, match="REDIS_URL: URL scheme"):
        env_url({"REDIS_URL": "http://cache:6379"}, "REDIS_URL", ("redis", "rediss", "unix"))


def test_agent_settings_refuse_metadata_endpoints() -> None:
    from routeiq_config_sync.settings import AgentSettings
    from routeiq_model_sync.settings import ModelSyncSettings

    with pytest.raises(SystemExit, match="AWS_ENDPOINT_URL_S3"):
        AgentSettings.from_env({"CONFIG_SOURCE": "s3://b/p/", "AWS_ENDPOINT_URL_S3": "http://2852039166"})
    with pytest.raises(SystemExit, match="REDIS_URL"):
        ModelSyncSettings.from_env({"MODEL_REGISTRY": "s3://b/m/", "REDIS_URL": "redis://[::ffff:a9fe:a9fe]:6379"})
    with pytest.raises(SystemExit, match="AWS_ENDPOINT_URL_S3"):
        ModelSyncSettings.from_env({"MODEL_REGISTRY": "s3://b/m/", "AWS_ENDPOINT_URL_S3": "http://0xa9fea9fe"})


def test_an_s3_store_never_points_at_a_metadata_address() -> None:
    from routeiq_shared.objectstore import open_store

    with pytest.raises(EgressError, match="metadata"):
        open_store("s3://bucket/prefix/", "http://169.254.169.254")


def test_an_otlp_endpoint_at_a_metadata_address_stops_start_up() -> None:
    from routeiq_shared.telemetry import setup_tracing

    with pytest.raises(SystemExit, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        setup_tracing("t", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://169.254.169.254:4318"})


def test_the_admin_reload_call_is_checked_after_resolution() -> None:
    from routeiq_config_sync.notify import reload_over_http

    answer = asyncio.run(reload_over_http("http://2852039166:4001", "sk-admin-secret"))
    assert answer.problem is not None and "metadata" in answer.problem
    assert "sk-admin-secret" not in answer.problem
