"""Issue 7, the gateway's upstream side: retry policy, stream scanning, status mapping, scrubbing, pools, egress.

Unit tests with in-process fakes; the end-to-end checks against real processes are in
tests/integration/test_upstream_hardening.py.
"""

from __future__ import annotations

import random

from routeiq_gateway.dispatch.dispatcher import MAX_BACKOFF_SECONDS, backoff_seconds


def test_backoff_is_full_jitter_under_the_cap() -> None:
    rng = random.Random(11)
    for attempt in range(1, 25):
        ceiling = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (attempt - 1))
        samples = [backoff_seconds(0.5, attempt, rng) for _ in range(300)]
        assert all(0.0 <= s <= ceiling for s in samples), (attempt, max(samples), ceiling)
        # full jitter: the whole range [0, ceiling] is used, not a band around the ceiling
        assert min(samples) < ceiling * 0.1 and max(samples) > ceiling * 0.9
