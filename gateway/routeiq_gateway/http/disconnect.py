"""Stop waiting on upstream for a client that has gone away, and tell a body cut at its deadline from a client gone.

The connection protocol (protocol.py) sees the disconnect first, in `connection_lost`: the app registers the task
to cancel in the request's scope while it waits on upstream (app.py `_serve`), and the protocol cancels it. That
costs two dict operations per request; a watcher task per request (a `receive()` kept pending beside the upstream
call) cost about a tenth of the gateway's CPU on the native path (bench/: `make bench`).

Without our protocol (the app run by another server), nothing cancels: the call ends at the upstream timeout.
"""

from __future__ import annotations

from routeiq_gateway.http.asgi import Scope

# Keys in the ASGI scope shared by the protocol and the app (ours: scope keys are per request).
CANCEL_ON_DISCONNECT = "routeiq.cancel_on_disconnect"  # the task to cancel if the client goes
CLIENT_GONE = "routeiq.client_gone"  # set by the protocol when it cancelled for that reason
BODY_TIMED_OUT = "routeiq.body_timed_out"  # set by the protocol when it answered 408 for a slow body


def cancel_for_disconnect(scope: Scope) -> None:
    """Called by the protocol when the connection is lost before the response completed."""
    task = scope.pop(CANCEL_ON_DISCONNECT, None)
    if task is not None and not task.done():
        scope[CLIENT_GONE] = True
        task.cancel()
