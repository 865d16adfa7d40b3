"""LiteLLM's exceptions read back into what the upstream did, then mapped as the native path maps it.

LiteLLM wraps some upstream answers (a 418, a 422) in an APIConnectionError with status 500, and a refused or
reset connection in a 500 InternalServerError; the exceptions down the cause chain keep the real status, the
provider's own error body and its response headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import orjson

from routeiq_gateway.http.errors import GatewayError
from routeiq_gateway.providers.relayed_headers import from_provider_headers
from routeiq_gateway.providers.scrub import scrub
from routeiq_gateway.providers.upstream_status import status_error
from routeiq_gateway.routing.deployments import Deployment

_CHAIN_LIMIT = 10
_UNSUPPORTED = re.compile(r"does not support parameters: \[([^\]]*)\]")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    for _ in range(_CHAIN_LIMIT):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _caused_by_transport(exc: BaseException) -> bool:
    """A refused or reset connection (LiteLLM reports it as a 500 'InternalServerError')."""
    return any(
        isinstance(e, OSError) or type(e).__name__ in ("ConnectError", "ReadError", "RemoteProtocolError")
        for e in _chain(exc)
    )


def _non_error_status(exc: BaseException) -> int | None:
    """The upstream's status when it answered 1xx/2xx/3xx (a 201, a 302 LiteLLM did not follow)."""
    for seen in _chain(exc):
        status = getattr(seen, "status_code", None)
        if isinstance(status, int) and 100 <= status < 400 and status != 200:
            return status
    return None


def _answered_status(exc: BaseException) -> int | None:
    """The error status the upstream answered with; an APIConnectionError's own 500 is LiteLLM's, not an answer."""
    for seen in _chain(exc):
        status = getattr(seen, "status_code", None)
        if isinstance(status, int) and 400 <= status <= 599 and type(seen).__name__ != "APIConnectionError":
            return status
    return None


def _provider_message(exc: BaseException) -> str:
    """The provider's own explanation (its error body's message) when an exception in the chain holds the body."""
    for seen in _chain(exc):
        text = getattr(seen, "message", None)
        if isinstance(text, str) and text.lstrip().startswith("{"):
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            err = data.get("error") if isinstance(data, dict) else None
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                return str(err["message"])
    return str(getattr(exc, "message", "") or exc)


def _response_headers(exc: BaseException) -> tuple[str | None, tuple[tuple[bytes, bytes], ...]]:
    """Retry-After and the relayed headers of the provider's error response."""
    for seen in _chain(exc):
        headers = getattr(seen, "litellm_response_headers", None)
        if not headers:
            response = getattr(seen, "response", None)
            # LiteLLM gives exceptions without a real response a mock one (no headers): those are skipped.
            headers = getattr(response, "headers", None)
        if headers:
            retry_after = headers.get("retry-after")
            return (retry_after if isinstance(retry_after, str) else None), from_provider_headers(headers)
    return None, ()


def _unsupported_params(exc: BaseException, dep: Deployment | None) -> GatewayError:
    match = _UNSUPPORTED.search(str(getattr(exc, "message", "") or exc))
    names = re.findall(r"'([^']+)'", match.group(1)) if match else []
    what = ", ".join(f"'{n}'" for n in names) or "some parameters"
    provider = dep.provider if dep is not None else "this provider"
    return GatewayError(
        400,
        f"{provider} does not support {what} for this model. Leave them out, or set drop_params: true in the "
        "deployment's litellm_params to have them dropped.",
        code="unsupported_params",
        param=names[0] if names else None,
    )


def to_gateway_error(exc: Exception, dep: Deployment | None = None) -> GatewayError:
    name = type(exc).__name__
    odd = _non_error_status(exc)
    if odd is not None:
        return status_error(odd, "")
    if name == "Timeout":
        return GatewayError(504, "Upstream timed out", code="upstream_timeout", retryable=True)
    if name == "UnsupportedParamsError":
        return _unsupported_params(exc, dep)
    if _caused_by_transport(exc):
        return GatewayError(502, "Upstream connection failed", code="upstream_unreachable", retryable=True)
    # LiteLLM's texts quote the URL it called and sometimes the request's headers: scrubbed before anyone sees them.
    status = _answered_status(exc)
    if status is not None:
        retry_after, headers = _response_headers(exc)
        return status_error(status, scrub(_provider_message(exc), dep)[:500], retry_after, headers)
    if name == "APIConnectionError":
        return GatewayError(502, "Upstream connection failed", code="upstream_unreachable", retryable=True)
    message = scrub(str(getattr(exc, "message", "") or exc), dep)[:500]
    return GatewayError(502, f"Upstream error: {message}", code="upstream_error", retryable=True)
