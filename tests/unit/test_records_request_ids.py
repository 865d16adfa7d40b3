"""Request ids for feedback: checked from the id alone, bound to the caller's key, with a window."""

from __future__ import annotations

from routeiq_gateway.records.request_ids import IdCheck, RequestIds

NOW = 1_780_000_000.0
WEEK = 7 * 86400


def test_an_id_issued_by_one_pod_is_accepted_by_another_with_the_same_master_key():
    issued = RequestIds.for_master_key(b"sk-fleet-master").issue(b"sk-team-a", NOW)
    other_pod = RequestIds.for_master_key(b"sk-fleet-master")
    assert other_pod.check(issued, b"sk-team-a", NOW + 60, WEEK) is IdCheck.OK


def test_another_key_another_fleet_or_a_changed_id_is_unknown():
    ids = RequestIds.for_master_key(b"sk-fleet-master")
    issued = ids.issue(b"sk-team-a", NOW)
    assert ids.check(issued, b"sk-team-b", NOW, WEEK) is IdCheck.UNKNOWN
    assert ids.check(issued, None, NOW, WEEK) is IdCheck.UNKNOWN
    assert RequestIds.for_master_key(b"sk-other-fleet").check(issued, b"sk-team-a", NOW, WEEK) is IdCheck.UNKNOWN
    flipped = issued[:5] + ("0" if issued[5] != "0" else "1") + issued[6:]
    assert ids.check(flipped, b"sk-team-a", NOW, WEEK) is IdCheck.UNKNOWN
    for junk in ("", "rq_", issued + "0", "chatcmpl-123", "rq_" + "é" * (len(issued) - 3)):
        assert ids.check(junk, b"sk-team-a", NOW, WEEK) is IdCheck.UNKNOWN, junk


def test_an_id_older_than_the_window_is_expired():
    ids = RequestIds.for_master_key(b"sk-fleet-master")
    issued = ids.issue(None, NOW)
    assert ids.check(issued, None, NOW + WEEK - 1, WEEK) is IdCheck.OK
    assert ids.check(issued, None, NOW + WEEK + 1, WEEK) is IdCheck.EXPIRED


def test_without_a_master_key_the_process_secret_survives_a_reload():
    issued = RequestIds.for_master_key(None).issue(None, NOW)
    assert RequestIds.for_master_key(None).check(issued, None, NOW, WEEK) is IdCheck.OK
    assert len({RequestIds.for_master_key(b"k" * 8).issue(None, NOW) for _ in range(100)}) == 100
