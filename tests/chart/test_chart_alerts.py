"""The alert rules: `promtool check rules` and `promtool test rules` (rules/tests/ holds the alerts' unit tests)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.helm_chart import CHART_DIR, alert_rules, promtool

RULES = CHART_DIR / "rules" / "alerts.yaml"
UNIT_TESTS = sorted((CHART_DIR / "rules" / "tests").glob("*.yaml"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_check_rules() -> None:
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    assert UNIT_TESTS
    result = run("test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tested = set()
    for path in UNIT_TESTS:
        text = path.read_text()
        tested |= {rule["alert"] for rule in alert_rules() if "alert" in rule and f"alertname: {rule['alert']}" in text}
    alerts = {rule["alert"] for rule in alert_rules() if "alert" in rule}
    assert alerts - tested == set()


def test_the_issue_s_alerts_are_there() -> None:
    alerts = {rule["alert"]: rule for rule in alert_rules() if "alert" in rule}
    # SLO burn, multi-window: each burn alert compares two windows.
    for name in ("RouteIQAvailabilityBudgetBurnFast", "RouteIQLatencyBudgetBurnFast"):
        assert "ratio_rate1h" in alerts[name]["expr"] and "ratio_rate5m" in alerts[name]["expr"]
        assert "ratio_rate6h" in alerts[name]["expr"] and "ratio_rate30m" in alerts[name]["expr"]
    for name in (
        "RouteIQConfigSyncStale",  # sync staleness
        "RouteIQModelSyncStale",
        "RouteIQDegradedRedis",  # degraded mode
        "RouteIQModelVerificationFailed",  # model verification failures
        "RouteIQConfigReloadFailed",  # reload failures
        "RouteIQRoutingDecisionSlow",
    ):
        assert name in alerts


def test_a_broken_rule_file_fails_the_check(tmp_path: Path) -> None:
    # promtool really parses: the same file with one bad expression is refused.
    bad = tmp_path / "bad.yaml"
    bad.write_text(RULES.read_text().replace("> 900", "> > 900", 1))
    result = run("check", "rules", str(bad))
    assert result.returncode != 0
