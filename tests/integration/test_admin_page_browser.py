"""The admin web page (/ui on :4001) in a real browser: Debian's headless Chromium driven over its DevTools
protocol (harness/chromium.py), a real gateway, a real PostgreSQL. Log in with the break-glass key, create a team
and a key (the secret shown once), use the key on the API, revoke it from the page, find every action in the
page's audit log; the session cookie is HttpOnly and SameSite=Strict, and a form without its CSRF token is refused.

With ROUTEIQ_SCREENSHOTS set to a directory, a screenshot of each page is written there (docs/images/ for the
README)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness.chromium import SETUP_HINT, Chromium, Page, find_chromium
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import GatewayHandle, StartGateway
from harness.postgres_server import upgraded

pytestmark = pytest.mark.integration

ADMIN = "sk-admin-browser-break-glass"


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    if find_chromium() is None:
        pytest.fail(SETUP_HINT, pytrace=False)
    browser = Chromium(tmp_path / "chromium").start()
    yield browser
    browser.stop()


def chat(gw: GatewayHandle, key: str) -> int:
    resp = httpx.post(
        gw.url("/v1/chat/completions"),
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
        trust_env=False,
    )
    return resp.status_code


async def fill(page: Page, form: str, values: dict[str, str]) -> None:
    for name, value in values.items():
        await page.evaluate(f"document.querySelector('#{form} [name={name}]').value = {value!r}")


async def snap(page: Page, name: str) -> None:
    target = os.environ.get("ROUTEIQ_SCREENSHOTS")
    if target:
        await page.screenshot(Path(target) / f"admin-{name}.png")


def test_admin_page_in_chromium(
    start_gateway: StartGateway,
    fresh_upstream: FakeUpstream,
    fresh_database: str,
    chromium: Chromium,
    tmp_path: Path,
) -> None:
    config: dict[str, Any] = {
        "model_list": [
            {
                "model_name": "fast",
                "litellm_params": {"model": "openai/fake", "api_base": fresh_upstream.base_url, "api_key": "sk-up"},
            }
        ],
        "general_settings": {"master_key": "sk-master"},
        "routeiq": {"audit": {"table_flush_seconds": 0.2}},
    }
    gw = start_gateway(config, env={"DATABASE_URL": upgraded(fresh_database), "ADMIN_API_KEYS": ADMIN})

    async def scenario() -> dict[str, Any]:
        async with chromium.page() as page:
            await page.goto(gw.admin("/ui"))
            assert (await page.url()).endswith("/ui/login")  # no session: to the login form
            await snap(page, "login")
            await page.evaluate(f"document.querySelector('#credential').value = {ADMIN!r}")
            await page.act("document.querySelector('#login').click()")
            assert (await page.url()).endswith("/ui"), await page.text()
            cookie = next(c for c in await page.cookies() if c["name"] == "riq_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
            assert ADMIN not in cookie["value"]

            await fill(page, "new-team", {"team_id": "web-team", "rpm_limit": "60", "max_budget": "25"})
            await page.act("document.querySelector('#new-team button').click()")
            teams = await page.text("#teams")
            assert "web-team" in teams and "60" in teams and "25" in teams

            await page.evaluate("document.querySelector('#new-key [name=team_id]').value = 'web-team'")
            await fill(page, "new-key", {"key_alias": "browser-key", "tpm_limit": "5000"})
            await page.act("document.querySelector('#new-key button').click()")
            secret = await page.text("#secret")
            assert secret.startswith("sk-riq-"), await page.text()
            keys = await page.text("#keys")
            assert "browser-key" in keys and "web-team" in keys and "5000" in keys
            assert secret not in keys  # listed by its prefix only
            await snap(page, "teams-and-keys")
            assert chat(gw, secret) == 200  # the key works on the API

            key_id = str(await page.evaluate("document.querySelector('#new-secret b').innerText"))
            await page.goto(gw.admin("/ui"))
            assert secret not in await page.text()  # shown once
            # a form posted without its CSRF token (the cookie alone) is refused
            await page.act(
                "const f = document.createElement('form'); f.method = 'post'; f.action = '/ui/teams';"
                " const i = document.createElement('input'); i.name = 'team_id'; i.value = 'forged';"
                " f.appendChild(i); document.body.appendChild(f); f.submit()"
            )
            assert "csrf_failed" in await page.text()
            await page.goto(gw.admin("/ui"))
            await page.act(f"document.querySelector('#revoke-{key_id}').click()")
            assert "revoked" in await page.text(f"#key-{key_id}")

            found = ""
            for _ in range(50):  # the search table is written in batches (table_flush_seconds)
                await page.goto(gw.admin(f"/ui/audit?target=key:{key_id}"))
                found = await page.text("#audit")
                if "key.revoke" in found:
                    break
                await asyncio.sleep(0.1)
            await snap(page, "audit")
            await page.goto(gw.admin("/ui/audit?action=team.create"))
            return {"key_id": key_id, "secret": secret, "key_audit": found, "team_audit": await page.text("#audit")}

    seen = asyncio.run(scenario())
    assert "key.revoke" in seen["key_audit"] and "key.create" in seen["key_audit"]
    assert "admin_key:" in seen["key_audit"]
    assert "team:web-team" in seen["team_audit"] and "forged" not in seen["team_audit"]
    assert chat(gw, seen["secret"]) == 401  # revoked from the page: refused on the API
    assert seen["secret"] not in gw.log_text()
