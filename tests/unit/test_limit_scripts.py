"""The limits' Lua scripts on a real redis-server, with the clock passed in (window edges, refills, refunds,
expiring slots), and the in-memory twin (local_limits.py) answering the same sequences the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from harness.redis_server import RedisServer
from routeiq_gateway.admission.limit_scripts import ADMIT, SETTLE, redis_keys
from routeiq_gateway.admission.local_limits import LocalLimits, Verdict, share

PERIOD = 60_000
T0 = 1_800_000_000_000  # ms


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def seconds(self) -> float:
        return self.ms / 1000


Admit = Callable[..., Verdict]
Settle = Callable[..., None]


def _redis_pair(server: RedisServer, clock: Clock) -> tuple[Admit, Settle]:
    client = server.client()
    admit_script, settle_script = client.register_script(ADMIT), client.register_script(SETTLE)

    def admit(
        rpm: int = -1, tpm: int = -1, par: int = -1, tokens: int = 0, slot: str = "", ttl: int = 10_000
    ) -> Verdict:
        conf = f"{rpm} {tpm} {par} {ttl} {PERIOD}"
        reply: Any = admit_script(keys=redis_keys("k", "key-1"), args=[conf, tokens, slot, clock.ms])
        return Verdict.of_script(reply)

    def settle(tpm: int = -1, delta: int = 0, slot: str = "") -> None:
        _, k_tpm, k_par = redis_keys("k", "key-1")
        settle_script(keys=[k_tpm, k_par], args=[tpm, PERIOD, clock.ms, delta, *([slot] if slot else [])])

    return admit, settle


def _local_pair(clock: Clock) -> tuple[Admit, Settle]:
    local = LocalLimits(clock=clock.seconds)

    def admit(
        rpm: int = -1, tpm: int = -1, par: int = -1, tokens: int = 0, slot: str = "", ttl: int = 10_000
    ) -> Verdict:
        return local.admit("k", "key-1", rpm, tpm, par, tokens, slot, ttl, PERIOD)

    def settle(tpm: int = -1, delta: int = 0, slot: str = "") -> None:
        local.settle("k", "key-1", tpm, delta, slot, PERIOD)

    return admit, settle


@pytest.fixture(params=["redis", "local"])
def limits(request: pytest.FixtureRequest) -> tuple[Admit, Settle, Clock]:
    clock = Clock()
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("fresh_redis")
        return (*_redis_pair(server, clock), clock)
    return (*_local_pair(clock), clock)


def test_rpm_burst_of_exactly_the_limit_then_one_per_interval(limits: tuple[Admit, Settle, Clock]) -> None:
    admit, _, clock = limits
    verdicts = [admit(rpm=6) for _ in range(8)]
    assert [v.allowed for v in verdicts] == [True] * 6 + [False] * 2
    assert [v.rpm_remaining for v in verdicts[:6]] == [5, 4, 3, 2, 1, 0]
    assert verdicts[5].rpm_reset_ms == PERIOD  # back to a full allowance a period after the burst
    refused = verdicts[6]
    assert refused.denied_by == "rpm" and refused.retry_ms == 10_000  # 60 s / 6: the next one's spacing
    clock.ms += 9_999  # one ms before the edge: still refused
    assert not admit(rpm=6).allowed
    clock.ms += 1  # on the edge: one more, and only one
    assert admit(rpm=6).allowed
    assert not admit(rpm=6).allowed


def test_rpm_refills_to_the_limit_not_beyond(limits: tuple[Admit, Settle, Clock]) -> None:
    admit, _, clock = limits
    assert admit(rpm=3).allowed
    clock.ms += 10 * PERIOD  # idle a long time: the allowance is the limit, not more
    assert [admit(rpm=3).allowed for _ in range(4)] == [True, True, True, False]


def test_clock_going_back_does_not_grant_more(limits: tuple[Admit, Settle, Clock]) -> None:
    admit, _, clock = limits
    assert all(admit(rpm=2).allowed for _ in range(2))
    clock.ms -= 5_000  # another replica's clock (tests only: the scripts read Redis's TIME)
    assert not admit(rpm=2).allowed


def test_zero_allows_nothing_and_minus_one_is_no_limit(limits: tuple[Admit, Settle, Clock]) -> None:
    admit, _, _ = limits
    refused = admit(rpm=0)
    assert not refused.allowed and refused.denied_by == "rpm" and refused.retry_ms == PERIOD
    free = [admit() for _ in range(50)]
    assert all(v.allowed and v.rpm_remaining == -1 and v.tpm_remaining == -1 for v in free)


def test_tpm_reserved_then_corrected_by_usage(limits: tuple[Admit, Settle, Clock]) -> None:
    admit, settle, _ = limits
    first = admit(tpm=1000, tokens=600)
    assert first.allowed and first.tpm_remaining == 400
    second = admit(tpm=1000, tokens=600)
    assert not second.allowed and second.denied_by == "tpm" and second.tpm_remaining == 400
    assert second.retry_ms == 12_000  # 200 tokens short at 60 s / 1000 tokens
    settle(tpm=1000, delta=100 - 600)  # the answer used 100 tokens: 500 back
    assert admit(tpm=1000, tokens=600).allowed


def test_usage_above_the_estimate_is_charged(limits: tuple[Admit, Settle, Clock]) -> None:
    admit, settle, clock = limits
    assert admit(tpm=100, tokens=10).allowed
    settle(tpm=100, delta=140)  # used 150: 50 over the limit, paid back over the next 30 s
    assert not admit(tpm=100, tokens=0).allowed
    clock.ms += 30_000
    assert admit(tpm=100, tokens=0).allowed
    assert not admit(tpm=100, tokens=1).allowed


def test_a_request_over_the_whole_tpm_never_passes(limits: tuple[Admit, Settle, Clock]) -> None:
    admit, _, clock = limits
    assert not admit(tpm=100, tokens=101).allowed
    clock.ms += 10 * PERIOD
    assert not admit(tpm=100, tokens=101).allowed
    assert admit(tpm=100, tokens=100).allowed


def test_refusal_takes_nothing(limits: tuple[Admit, Settle, Clock]) -> None:
    """A request refused by tpm spends no rpm and holds no slot (check all, then take all)."""
    admit, _, _ = limits
    assert admit(rpm=2, tpm=10, par=1, tokens=10, slot="a").allowed
    refused = admit(rpm=2, tpm=10, par=5, tokens=5, slot="b")
    assert refused.denied_by == "tpm" and refused.in_use == 1
    again = admit(rpm=2, par=5, slot="c")
    assert again.allowed and again.rpm_remaining == 0 and again.in_use == 2


def test_parallel_slots_taken_released_and_expired(limits: tuple[Admit, Settle, Clock]) -> None:
    admit, settle, clock = limits
    assert admit(par=2, slot="a", ttl=5_000).in_use == 1
    assert admit(par=2, slot="b", ttl=5_000).in_use == 2
    refused = admit(par=2, slot="c", ttl=5_000)
    assert not refused.allowed and refused.denied_by == "parallel" and refused.in_use == 2
    settle(slot="a")  # request a ended
    assert admit(par=2, slot="c", ttl=5_000).allowed
    clock.ms += 5_001  # b and c left by a replica that died: gone after their TTL
    assert admit(par=2, slot="d", ttl=5_000).in_use == 1
    settle(slot="d")
    settle(slot="d")  # a second release of the same slot is harmless
    assert admit(par=1, slot="e", ttl=5_000).allowed


def test_redis_keys_share_one_hash_tag() -> None:
    team, key_of_team, lone_key = redis_keys("t", "team-a"), redis_keys("k", "k1", "team-a"), redis_keys("k", "k2")
    assert {k.split("}")[0] for k in (*team, *key_of_team)} == {"routeiq:{t:team-a"}  # one Cluster slot
    assert {k.split("}")[0] for k in lone_key} == {"routeiq:{k:k2"}
    assert len({*team, *key_of_team}) == 6
    assert redis_keys("k", "x") != redis_keys("t", "x")


def test_key_and_team_in_one_call_all_or_nothing(fresh_redis: RedisServer) -> None:
    client = fresh_redis.client()
    script = client.register_script(ADMIT)
    keys = [*redis_keys("k", "k1", "team-a"), *redis_keys("t", "team-a")]
    key_conf, team_conf = f"5 -1 -1 1000 {PERIOD}", f"-1 -1 1 1000 {PERIOD}"  # key: 5 rpm; team: 1 in parallel

    def admit(slot: str) -> list[Verdict]:
        reply = script(keys=keys, args=[key_conf, team_conf, 0, slot, T0])
        return [Verdict.of_script(part) for part in reply.split(b";")]

    key, team = admit("a")
    assert key.allowed and team.allowed and key.rpm_remaining == 4 and team.in_use == 1
    key, team = admit("b")  # the team has no slot left: refused, and the key's rpm is not spent
    assert not team.allowed and team.denied_by == "parallel" and key.allowed
    assert client.get(keys[0]) is not None
    assert float(client.get(keys[0])) == T0 + PERIOD / 5  # one request's worth, not two
    assert client.zcard(keys[5]) == 1


def test_script_reads_redis_time_when_no_clock_is_given(fresh_redis: RedisServer) -> None:
    client = fresh_redis.client()
    script = client.register_script(ADMIT)
    keys = redis_keys("k", "now")
    replies = [Verdict.of_script(script(keys=keys, args=[f"2 -1 -1 1000 {PERIOD}", 0, ""])) for _ in range(3)]
    assert [v.allowed for v in replies] == [True, True, False]
    assert 0 < client.pttl(keys[0]) <= PERIOD + 1


def test_share_divides_by_replicas_keeping_a_floor() -> None:
    assert share(100, 4) == 25
    assert share(3, 4) == 1  # a limit above 0 never becomes "nothing allowed"
    assert share(0, 4) == 0
    assert share(-1, 4) == -1
    assert share(7, 1) == 7


def test_one_settle_for_several_requests_of_a_scope(fresh_redis: RedisServer) -> None:
    """Requests of a scope that end together are settled in one call: their deltas summed, all their slots freed."""
    clock = Clock()
    admit, _ = _redis_pair(fresh_redis, clock)
    for slot in ("a", "b", "c"):
        assert admit(tpm=1000, par=3, tokens=300, slot=slot).allowed
    assert not admit(tpm=1000, par=5, tokens=300, slot="d").allowed  # 900 of 1000 reserved
    client = fresh_redis.client()
    _, k_tpm, k_par = redis_keys("k", "key-1")
    settle = client.register_script(SETTLE)
    settle(keys=[k_tpm, k_par], args=[1000, PERIOD, clock.ms, -250 * 2, "a", "b"])  # two used 50 each
    after = admit(tpm=1000, par=3, tokens=0, slot="e")
    assert after.in_use == 2  # c and e
    assert after.tpm_remaining == 1000 - 300 - 2 * 50
