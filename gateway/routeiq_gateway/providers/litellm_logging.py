"""LiteLLM's own logging, made to speak the gateway's: one JSON object per line, no colours, no secrets.

At import LiteLLM adds a StreamHandler with a coloured text format to its three loggers ("LiteLLM",
"LiteLLM Router", "LiteLLM Proxy"), which bypasses the gateway's JSON handler on the root logger; with
`suppress_debug_info` off it also print()s a coloured "Give Feedback / Get Help" banner on every mapped error,
and with `set_verbose` on it print()s debug text. `quiet_litellm` undoes all three after the import.
"""

from __future__ import annotations

import logging
from typing import Any

from routeiq_gateway.providers.scrub import scrub

LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


class _ScrubFilter(logging.Filter):
    """LiteLLM's records can quote provider errors and request headers: scrub them as the client's copy is."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a record whose args do not fit its format: log it as it is
            return True
        if record.exc_info:  # a traceback quotes exception texts, which quote requests: folded in and scrubbed
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = scrub(message), None
        return True


_SCRUB = _ScrubFilter()


def quiet_litellm(litellm: Any) -> None:
    """Route LiteLLM's loggers through the root (JSON) handler, at WARNING, and switch its print()s off."""
    litellm.suppress_debug_info = True  # the coloured banner print()ed on each mapped exception
    litellm.set_verbose = False  # print_verbose() and friends
    for name in LITELLM_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.WARNING)  # its INFO/DEBUG lines are per-call chatter, not the gateway's news
        if _SCRUB not in logger.filters:
            logger.addFilter(_SCRUB)
