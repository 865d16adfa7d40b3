"""Mounted into the gateway container by test_image_moat.py (PYTHONPATH=/audit): records every outbound
connect and name lookup the Python socket layer makes, one JSON line each, to $ROUTEIQ_AUDIT_FILE.

Python's audit events see what the socket module does (httpx, urllib, requests, aiohttp's resolver threads); the
network namespace without egress is what stops the rest."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

_OUT = os.environ.get("ROUTEIQ_AUDIT_FILE")


def _record(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect":
        sock, address = args[0], args[1]
        if sock.family == socket.AF_UNIX:
            return
        entry = {"event": event, "host": str(address[0]), "port": address[1]}
    elif event == "socket.getaddrinfo":
        entry = {"event": event, "host": str(args[0]), "port": args[1]}
    elif event in ("socket.gethostbyname", "socket.gethostbyaddr"):
        entry = {"event": event, "host": str(args[0]), "port": None}
    else:
        return
    entry["pid"] = os.getpid()
    with open(str(_OUT), "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


if _OUT:
    sys.addaudithook(_record)
