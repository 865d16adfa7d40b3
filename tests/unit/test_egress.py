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
