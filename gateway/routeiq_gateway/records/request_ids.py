"""Request ids a client can give feedback on, checked by any pod of the fleet without shared state.

An id carries its issue time and a MAC over that time, a nonce and the caller's API key, keyed by a secret derived
from the master key (every pod of a fleet has the same config). So any pod can tell, from the id alone, that this
fleet issued it, to this caller, and when: an id from elsewhere, or sent with another team's key, is unknown; an old
one is expired. Rotating the master key ends feedback on ids issued before. Without a master key (auth off) the
secret is the process's own, and only the pod that served a request accepts its feedback.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from dataclasses import dataclass
from enum import Enum

_PREFIX = "rq_"
_TIME_HEX = 11  # milliseconds since the epoch, in hex: good until the year 2527
_NONCE_HEX = 10
_MAC_HEX = 20  # 80 bits
_LENGTH = len(_PREFIX) + _TIME_HEX + _NONCE_HEX + _MAC_HEX


class IdCheck(Enum):
    OK = "ok"
    UNKNOWN = "unknown"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class RequestIds:
    secret: bytes

    @classmethod
    def for_master_key(cls, master_key: bytes | None) -> RequestIds:
        if master_key is None:
            return cls(_process_secret())
        return cls(hashlib.blake2b(master_key, digest_size=32, person=b"routeiq-reqid").digest())

    def issue(self, caller_key: bytes | None, now: float) -> str:
        head = f"{int(now * 1000):0{_TIME_HEX}x}{os.urandom(_NONCE_HEX // 2).hex()}"
        return _PREFIX + head + self._mac(head, caller_key)

    def check(self, request_id: str, caller_key: bytes | None, now: float, window_seconds: float) -> IdCheck:
        if len(request_id) != _LENGTH or not request_id.isascii() or not request_id.startswith(_PREFIX):
            return IdCheck.UNKNOWN
        head, mac = request_id[len(_PREFIX) : -_MAC_HEX], request_id[-_MAC_HEX:]
        if not hmac.compare_digest(mac, self._mac(head, caller_key)):
            return IdCheck.UNKNOWN
        issued = int(head[:_TIME_HEX], 16) / 1000
        if now - issued > window_seconds:
            return IdCheck.EXPIRED
        return IdCheck.OK

    def _mac(self, head: str, caller_key: bytes | None) -> str:
        key_digest = hashlib.sha256(caller_key or b"").digest()
        return hmac.new(self.secret, head.encode() + b"|" + key_digest, hashlib.sha256).hexdigest()[:_MAC_HEX]


@functools.cache
def _process_secret() -> bytes:
    """Made on first use and kept for the process's life: ids stay valid across reloads."""
    return os.urandom(32)
