"""Upstream error text, made safe to show a client: no credentials and no upstream address.

Upstreams (and LiteLLM's exception texts) echo what they were sent: a 400 about a malformed header quotes
`authorization: Bearer sk-…`, a proxy's error page names its own host:port, LiteLLM prefixes the URL it called.
Every message that reaches a client from an upstream passes through `scrub` first.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from routeiq_gateway.routing.deployments import Deployment

REDACTED = "[redacted]"
UPSTREAM = "[upstream]"

_PATTERNS = (
    # header echoes, whatever the value looks like: `authorization: …`, `"x-api-key": "…"`, `api-key=…`
    re.compile(
        r"""(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-goog-api-key|cookie)(["']?\s*[:=]\s*["']?)"""
        r"""[^"'\r\n,}]*"""
    ),
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),  # OpenAI and Anthropic (sk-ant-…) style keys
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"),  # Google API keys
)


def _hide(match: re.Match[str]) -> str:
    if match.re is _PATTERNS[0]:
        return f"{match.group(1)}{match.group(2)}{REDACTED}"
    if match.re is _PATTERNS[1]:
        return f"{match.group(1)} {REDACTED}"
    return REDACTED


def scrub(text: str, dep: Deployment | None = None) -> str:
    """`text` without the deployment's key, anything credential-shaped, and the deployment's api_base address."""
    if dep is not None:
        if dep.api_key and len(dep.api_key.strip()) >= 4:
            text = text.replace(dep.api_key, REDACTED).replace(dep.api_key.strip(), REDACTED)
        for value in (v for _, v in dep.extra_params if isinstance(v, str) and len(v) >= 12):
            text = text.replace(value, REDACTED)  # e.g. aws_secret_access_key, vertex credentials as a string
        if dep.api_base:
            text = _scrub_address(text, dep.api_base)
    for pattern in _PATTERNS:
        text = pattern.sub(_hide, text)
    return text


def _scrub_address(text: str, api_base: str) -> str:
    try:
        parts = urlsplit(api_base)
        port = parts.port
    except ValueError:
        return text
    host = parts.hostname
    if not host:
        return text
    text = text.replace(api_base.rstrip("/"), UPSTREAM)
    if parts.netloc:
        text = text.replace(parts.netloc, UPSTREAM)
    if port is not None:
        text = text.replace(f"{host}:{port}", UPSTREAM)
    return re.sub(rf"(?i)(?<![\w.-]){re.escape(host)}(?::\d+)?(?![\w-])", UPSTREAM, text)
