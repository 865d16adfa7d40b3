"""What a client sees when the upstream answered with a status other than 200, on either provider path.

One table for both paths (native.py reads the status off the wire, litellm_client.py out of LiteLLM's exception),
so the same upstream answer gives the same status, code and headers whichever path served it.
"""

from __future__ import annotations

from routeiq_gateway.http.errors import GatewayError

# Statuses that say the request itself was wrong: passed on, so the client learns what to fix.
_REQUEST_FAULTS = frozenset({400, 404, 413, 415})
Headers = tuple[tuple[bytes, bytes], ...]


def status_error(
    status: int, message: str, retry_after: str | None = None, headers: Headers = (), param: str | None = None
) -> GatewayError:
    """`message` is the upstream's own explanation, already scrubbed; `headers` are those relayed to the client."""
    if status < 400:
        # Only a 200 carries an answer. A redirect is not followed (it could point anywhere, with our key).
        what = "a redirect" if 300 <= status < 400 else "a status that is not an answer"
        return GatewayError(
            502,
            f"Upstream answered {status} ({what}) where 200 was expected; check the deployment's api_base",
            code="upstream_unexpected_status",
        )
    if status == 429:
        if retry_after:
            headers = ((b"retry-after", retry_after.encode("latin-1", "replace")), *headers)
        return GatewayError(
            429, f"Upstream rate limit: {message}", code="upstream_rate_limited", headers=headers, retryable=True
        )
    if status >= 500:
        return GatewayError(502, f"Upstream returned {status}: {message}", code="upstream_error", retryable=True)
    if status in (401, 403):
        # The client's key was fine; ours was refused. Not the client's fault, so not a 401.
        return GatewayError(502, f"Upstream refused the gateway's credentials ({status})", code="upstream_auth")
    if status in (408, 409):
        return GatewayError(502, f"Upstream returned {status}: {message}", code="upstream_error", retryable=True)
    if status == 422:
        # A validation failure (FastAPI-based servers answer 422): OpenAI's clients expect a 400 for it.
        return GatewayError(400, message, code="upstream_rejected", param=param)
    if status in _REQUEST_FAULTS:
        return GatewayError(status, message, code="upstream_rejected", param=param)
    # 402, 418, 451, …: the upstream's own condition, not something the client can fix by changing the request.
    return GatewayError(502, f"Upstream answered {status}: {message}", code="upstream_error")
