"""Where the upstream side gets its egress policy, and what it drops after a reload."""

from __future__ import annotations

import logging
import os
from typing import Any

from routeiq_shared.egress import EgressPolicy

from routeiq_gateway.providers.http1 import Pool
from routeiq_gateway.providers.native import NativeProvider
from routeiq_gateway.state import GatewayState

log = logging.getLogger("routeiq.gateway")


def egress_policy(state: GatewayState) -> EgressPolicy:
    """The env's allow-list (ROUTEIQ_EGRESS_ALLOWED_NETWORKS) plus the config's (`routeiq.egress.allowed_networks`,
    when the state carries it); raises ValueError naming a bad entry."""
    extra = [str(n) for n in getattr(state, "egress_allowed_networks", ())]
    return EgressPolicy.from_env(os.environ, extra)


def upstream_side_reloaded(state: GatewayState, pool: Pool, native: NativeProvider, litellm: Any) -> None:
    """After a swap: the new allow-list, and nothing kept (Targets, idle connections) for removed deployments."""
    try:
        policy = egress_policy(state)
    except ValueError as exc:  # config validation checks the CIDRs first; keep the old policy if one slips by
        log.error(
            "Egress allow-list is invalid; keeping the previous one",
            extra={"event": "egress_policy", "reason": str(exc)},
        )
    else:
        pool.policy = policy
        if litellm is not None:
            litellm.set_policy(policy)
    native.retain(state.configured_deployments)
