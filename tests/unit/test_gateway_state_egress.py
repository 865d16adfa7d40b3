"""The gateway state carries `routeiq.egress.allowed_networks` for the runtime egress check (issue 7 item 19)."""

from __future__ import annotations

from routeiq_gateway.state import build_state
from routeiq_shared.config_schema import load_config

CONFIG = b"""
model_list:
  - model_name: fast
    litellm_params: {model: openai/gpt-4o-mini, api_base: "http://10.1.2.3:8000/v1", api_key: sk-up}
"""


def test_allowed_networks_reach_the_state_as_written() -> None:
    raw = CONFIG + b"routeiq: {egress: {allowed_networks: [10.0.0.0/8, 'fd00::/8']}}\n"
    state = build_state(load_config(raw, None, {}), created=0)
    assert state.egress_allowed_networks == ("10.0.0.0/8", "fd00::/8")


def test_no_allowed_networks_by_default() -> None:
    assert build_state(load_config(CONFIG, None, {}), created=0).egress_allowed_networks == ()
