"""Limits over `rediss://` to a TLS-only redis-server (a CA made in the test, client certificates required) as an ACL
user; a wrong password degrades to local limits without the password in any line; bad Redis settings stop the
gateway at start naming the variable."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness.fake_upstream_control import FakeUpstream
from harness.gateway_process import StartGateway, VolumeDirs, config_text, gateway_script
from harness.processes import child_env, wait_until
from harness.redis_topologies import make_tls_files, start_tls_server, tls_client
from test_rate_limits import call, metric, new_key
from test_virtual_keys import ADMIN, config, upgraded

DEGRADED = 'gateway_degraded_mode{service="redis"}'
PASSWORD = "tls-Pw-93kq"


def test_limits_over_tls_as_an_acl_user(
    start_gateway: StartGateway, fresh_upstream: FakeUpstream, fresh_database: str, tmp_path: Path
) -> None:
    files = make_tls_files(tmp_path / "tls")
    server = start_tls_server(tmp_path / "redis", files, "routeiq", PASSWORD)
    tls_env = {
        "REDIS_TLS_CA_FILE": str(files.ca),
        "REDIS_TLS_CERT_FILE": str(files.client_cert),
        "REDIS_TLS_KEY_FILE": str(files.client_key),
    }
    try:
        db = upgraded(fresh_database)
        cfg = config(fresh_upstream)
        cfg["routeiq"]["limits"] = {"replicas": 2}
        env = {"DATABASE_URL": db, "ADMIN_API_KEYS": ADMIN, "REDIS_URL": server.url, **tls_env}
        gw = start_gateway(cfg, env=env, root=tmp_path / "a")
        key = new_key(gw, rpm_limit=4)
        # Shared: this one replica gets the whole 4 (locally it would be 4 / 2).
        assert [call(gw, key).status_code for _ in range(5)] == [200] * 4 + [429]
        assert metric(gw, DEGRADED) == 0.0
        with tls_client(server.port, files, "routeiq", PASSWORD) as conn:
            assert conn.keys("routeiq:*")  # the scripts ran there, over TLS, as the ACL user

        wrong = {**env, "REDIS_URL": server.url.replace(PASSWORD, "not-" + PASSWORD[::-1])}
        bad = start_gateway(cfg, env=wrong, root=tmp_path / "b")
        other = new_key(bad, rpm_limit=4)
        assert [call(bad, other).status_code for _ in range(3)] == [200, 200, 429]  # 4 / 2, locally
        wait_until(lambda: metric(bad, DEGRADED) == 1.0, timeout=5)
        down = [r for r in bad.json_logs() if r.get("event") == "degraded_mode"]
        assert down and "WRONGPASS" in down[0]["reason"]
        for handle in (gw, bad):
            assert PASSWORD not in handle.log_text() and PASSWORD[::-1] not in handle.log_text()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"REDIS_URL": f"redis://u:{PASSWORD}@127.0.0.1:6379/x"}, "REDIS_URL: database"),
        ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "REDIS_SENTINEL_MASTER"),
        (
            {"REDIS_URL": f"rediss://u:{PASSWORD}@127.0.0.1/0", "REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"},
            "REDIS_TLS_CA_FILE",
        ),
        ({"REDIS_URL": "redis://127.0.0.1/0", "REDIS_CLUSTER": "sometimes"}, "REDIS_CLUSTER"),
    ],
)
def test_bad_redis_settings_stop_the_gateway_naming_the_variable(
    tmp_path: Path, fresh_upstream: FakeUpstream, env: dict[str, str], says: str
) -> None:
    dirs = VolumeDirs(tmp_path).create()
    dirs.config_path.write_text(config_text(config(fresh_upstream)))
    argv = [str(gateway_script()), "--config", str(dirs.config_path), "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.run(
        argv, env=child_env({**dirs.env(), **env}), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr + proc.stdout
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]  # every line is JSON
    assert any(says in json.dumps(r) for r in lines), proc.stderr
