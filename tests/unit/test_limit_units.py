"""Pieces of the limits that need no Redis: the token estimate, the x-ratelimit-* headers, budget checks and the
next budget reset time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from routeiq_gateway.admission import budget
from routeiq_gateway.admission.limits import Ticket, _duration, _headers
from routeiq_gateway.admission.local_limits import Verdict
from routeiq_gateway.admission.token_estimate import estimate_tokens
from routeiq_gateway.tenancy.records import Limits, Team, VirtualKey


def _key(limits: Limits, spend: float = 0.0, team: Team | None = None) -> VirtualKey:
    return VirtualKey("k1", None, team, frozenset(), limits, spend, None, False)


def test_estimate_counts_prompt_text_and_the_completion_cap() -> None:
    chat = {
        "messages": [
            {"role": "user", "content": "x" * 40},
            {"role": "user", "content": [{"type": "text", "text": "y" * 8}]},
        ]
    }
    assert estimate_tokens("chat/completions", {**chat, "max_tokens": 50}, 1024) == 12 + 50
    assert estimate_tokens("chat/completions", {**chat, "max_completion_tokens": 7, "max_tokens": 50}, 1024) == 19
    assert estimate_tokens("chat/completions", chat, 300) == 12 + 300  # no cap: the configured default
    assert estimate_tokens("embeddings", {"input": ["abcd", "abcdefgh"]}, 300) == 3  # no completion
    assert estimate_tokens("responses", {"input": "z" * 5, "max_output_tokens": 10}, 300) == 2 + 10
    assert estimate_tokens("chat/completions", {"messages": [{"content": 5}], "max_tokens": True}, 9) == 9


def test_headers_are_openais_names_of_the_tightest_scope() -> None:
    key, team = Limits(rpm=100, tpm=1000), Limits(rpm=10)
    views = [(key, Verdict(True, "", 0, 99, 600, 900, 6000, 0)), (team, Verdict(True, "", 0, 3, 42_000, -1, 0, 0))]
    assert dict(_headers(views)) == {
        b"x-ratelimit-limit-requests": b"10",
        b"x-ratelimit-remaining-requests": b"3",
        b"x-ratelimit-reset-requests": b"42s",
        b"x-ratelimit-limit-tokens": b"1000",
        b"x-ratelimit-remaining-tokens": b"900",
        b"x-ratelimit-reset-tokens": b"6s",
    }
    assert _duration(120) == b"120ms" and _duration(60_000) == b"1m0s" and _duration(1_500) == b"1.5s"


def test_our_headers_replace_the_upstreams_rate_limit_headers_only() -> None:
    upstream = ((b"x-request-id", b"r1"), (b"x-ratelimit-remaining-requests", b"4999"))
    assert Ticket(headers=[(b"x-ratelimit-limit-requests", b"5")]).upstream_headers(upstream) == upstream[:1]
    assert Ticket().upstream_headers(upstream) == upstream  # no limits of ours: the upstream's, as they came


def test_budget_reached_by_key_or_team() -> None:
    assert budget.check(_key(Limits(budget=1.0), spend=0.99)) is None
    scope, exc = budget.check(_key(Limits(budget=1.0), spend=1.0)) or ("", None)
    assert scope == "key" and exc is not None and exc.status == 429 and exc.code == "budget_exceeded"
    team = Team("t1", None, frozenset(), Limits(budget=5.0, budget_reset_at=datetime.now(UTC).timestamp() + 100), 6.0)
    scope, exc = budget.check(_key(Limits(), team=team)) or ("", None)
    assert scope == "team" and exc is not None
    retry = dict(exc.headers)[b"retry-after"]
    assert 99 <= int(retry) <= 101
    assert budget.check(_key(Limits(budget=None), spend=1e9)) is None


def test_next_reset_steps_from_the_last_one_without_drift() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert budget.next_reset(at, "1h", at + timedelta(minutes=1)) == at + timedelta(hours=1)
    assert budget.next_reset(at, "1h", at + timedelta(hours=5, minutes=1)) == at + timedelta(hours=6)
    assert budget.next_reset(at, "30d", at) == at + timedelta(days=30)
