"""The issuer's signing keys (JWKS), cached by `kid`: fetched from a file, a URL or the discovery document.

A token with an unknown `kid` refetches the set (key rotation), at most once per `min_refresh` seconds, so a flood
of made-up kids costs the issuer one request per interval. A failed fetch keeps the keys already held: tokens
signed by them keep working while the issuer is down. Symmetric (`oct`) keys are never taken from a JWKS: a public
document cannot hold a shared secret. Fetches are async (httpx), redirects off, size-capped, and the host is
checked against the egress rules as written and as resolved (never a metadata address).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from jwt import PyJWK, PyJWKError
from routeiq_shared.egress import EgressError, EgressPolicy, check_setting_url

log = logging.getLogger("routeiq.gateway.admin")

MAX_DOCUMENT_BYTES = 256 * 1024
FETCH_TIMEOUT = 5.0
DISCOVERY_PATH = "/.well-known/openid-configuration"


class JwksUnavailable(Exception):
    """The keys could not be read (issuer down, bad document). The message names the URL or file, never a token."""


class JwksCache:
    def __init__(
        self,
        issuer: str,
        *,
        jwks_url: str | None,
        jwks_file: Path | None,
        cache_seconds: float,
        min_refresh: float,
        policy: EgressPolicy | None = None,
    ) -> None:
        self.issuer = issuer
        self.jwks_url = jwks_url
        self.jwks_file = jwks_file
        self.cache_seconds = cache_seconds
        self.min_refresh = min_refresh
        # The issuer is named by the operator, often in-cluster (Keycloak, Dex): any address but metadata ones.
        self.policy = policy or EgressPolicy.internal()
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = -float("inf")  # monotonic, last successful fetch
        self._tried_at = -float("inf")  # monotonic, last attempt
        self._lock = asyncio.Lock()
        self.fetches = 0  # attempts, for tests and logs

    async def key(self, kid: str | None) -> PyJWK | None:
        """The key for `kid` (a token without one may use the only key). None: not in the set, even after a
        refetch this interval allowed. Raises JwksUnavailable when no keys are held and none can be fetched."""
        found = self._lookup(kid)
        stale = time.monotonic() - self._fetched_at >= self.cache_seconds
        if found is not None and not stale:
            return found
        async with self._lock:  # one fetch at a time; waiters see its result
            found = self._lookup(kid)
            if found is not None and time.monotonic() - self._fetched_at < self.cache_seconds:
                return found
            if time.monotonic() - self._tried_at >= self.min_refresh:  # a flood of bad kids: one fetch a while
                await self._refresh()
            found = self._lookup(kid)
        if found is None and not self._keys:
            raise JwksUnavailable("the identity provider's keys could not be fetched")
        return found

    def _lookup(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        self._tried_at = time.monotonic()
        self.fetches += 1
        try:
            document = await self._document()
            keys = _parse_jwks(document)
        except JwksUnavailable as exc:
            log.warning(
                "OIDC signing keys not refreshed; keeping the %d held",
                len(self._keys),
                extra={"event": "oidc_jwks_refresh", "result": "failure", "reason": str(exc)},
            )
            return
        self._keys = keys
        self._fetched_at = time.monotonic()
        log.info(
            "OIDC signing keys refreshed",
            extra={"event": "oidc_jwks_refresh", "result": "ok", "kids": sorted(keys)},
        )

    async def _document(self) -> Any:
        if self.jwks_file is not None:
            try:
                raw = await asyncio.to_thread(self.jwks_file.read_bytes)
            except OSError as exc:
                raise JwksUnavailable(f"{self.jwks_file}: {exc.strerror or exc}") from None
            return _json(raw, str(self.jwks_file))
        url = self.jwks_url
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False, trust_env=False) as client:
            if url is None:
                discovery = await self._get(client, self.issuer.rstrip("/") + DISCOVERY_PATH)
                if not isinstance(discovery, dict) or not isinstance(discovery.get("jwks_uri"), str):
                    raise JwksUnavailable("the issuer's discovery document has no jwks_uri")
                if discovery.get("issuer") != self.issuer:
                    raise JwksUnavailable("the discovery document names another issuer")
                url = discovery["jwks_uri"]
            return await self._get(client, url)

    async def _get(self, client: httpx.AsyncClient, url: str) -> Any:
        try:
            check_setting_url("OIDC", url)
            parts = urlsplit(url)
            assert parts.hostname is not None  # check_setting_url made sure
            await self.policy.resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
            async with client.stream("GET", url, headers={"accept": "application/json"}) as resp:
                if resp.status_code != 200:
                    raise JwksUnavailable(f"{url}: HTTP {resp.status_code}")
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise JwksUnavailable(f"{url}: larger than {MAX_DOCUMENT_BYTES} bytes")
        except (httpx.HTTPError, OSError, EgressError) as exc:
            raise JwksUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None
        return _json(bytes(body), url)


def _json(raw: bytes, where: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise JwksUnavailable(f"{where}: not JSON") from None


def _parse_jwks(document: Any) -> dict[str, PyJWK]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksUnavailable("not a JWKS: no 'keys' list")
    keys: dict[str, PyJWK] = {}
    for i, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict) or jwk.get("kty") == "oct" or jwk.get("use", "sig") != "sig":
            continue  # encryption keys and shared secrets are not signing keys we may use
        try:
            key = PyJWK(jwk)
        except PyJWKError as exc:
            log.warning(
                "OIDC JWKS key skipped", extra={"event": "oidc_jwks_key_skipped", "index": i, "reason": str(exc)}
            )
            continue
        keys[str(jwk.get("kid", f"#{i}"))] = key
    if not keys:
        raise JwksUnavailable("the JWKS holds no usable signing key")
    return keys
