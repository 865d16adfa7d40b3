"""Redis settings from the environment (routeiq_shared.redis_settings): each mode read as documented, every bad
value refused with the variable's name, and a password never in a message or a repr."""

from __future__ import annotations

from pathlib import Path

import pytest
from routeiq_shared.redis_settings import RedisSettings, RedisSettingsError

SECRET = "pw-Zq81x"


def test_standalone_urls() -> None:
    s = RedisSettings.from_env({"REDIS_URL": f"redis://app:{SECRET}@10.0.0.5:6380/2"})
    assert s is not None
    assert (s.mode, s.host, s.port, s.db, s.username, s.password, s.tls) == (
        "standalone", "10.0.0.5", 6380, 2, "app", SECRET, None
    )  # fmt: skip
    assert SECRET not in repr(s) and SECRET not in s.target
    unix = RedisSettings.from_env({"REDIS_URL": "unix:///run/redis.sock?db=3", "REDIS_PASSWORD": SECRET})
    assert unix is not None and (unix.path, unix.db, unix.password) == ("/run/redis.sock", 3, SECRET)
    assert RedisSettings.from_env({}) is None


def test_env_credentials_take_the_place_of_the_urls() -> None:
    s = RedisSettings.from_env({"REDIS_URL": "redis://old:x@h/0", "REDIS_USERNAME": "new", "REDIS_PASSWORD": "p@:/"})
    assert s is not None and (s.username, s.password) == ("new", "p@:/")


def test_tls_files(tmp_path: Path) -> None:
    with pytest.raises(RedisSettingsError, match=r"REDIS_TLS_CA_FILE.*not a readable file"):
        RedisSettings.from_env({"REDIS_URL": "rediss://h:6379/0", "REDIS_TLS_CA_FILE": str(tmp_path / "none.pem")})
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(RedisSettingsError, match="REDIS_TLS_"):
        RedisSettings.from_env({"REDIS_URL": "rediss://h:6379/0", "REDIS_TLS_CA_FILE": str(bad)})
    with pytest.raises(RedisSettingsError, match="REDIS_TLS_CA_FILE is set but the connection is not TLS"):
        RedisSettings.from_env({"REDIS_URL": "redis://h:6379/0", "REDIS_TLS_CA_FILE": str(bad)})
    with pytest.raises(RedisSettingsError, match="go together"):
        RedisSettings.from_env({"REDIS_URL": "rediss://h:6379/0", "REDIS_TLS_CERT_FILE": str(bad)})
    s = RedisSettings.from_env({"REDIS_URL": "rediss://h:6390/0"})  # the system's CAs
    assert s is not None and s.tls is not None and s.target == "rediss://h:6390/0"


def test_sentinel() -> None:
    env = {
        "REDIS_SENTINELS": "s1:26379, s2:26380,s3",
        "REDIS_SENTINEL_MASTER": "mymaster",
        "REDIS_PASSWORD": SECRET,
        "REDIS_SENTINEL_PASSWORD": SECRET + "s",
        "REDIS_DB": "1",
    }
    s = RedisSettings.from_env(env)
    assert s is not None and s.mode == "sentinel"
    assert s.sentinels == (("s1", 26379), ("s2", 26380), ("s3", 26379))
    assert (s.master_name, s.db, s.password, s.sentinel_password) == ("mymaster", 1, SECRET, SECRET + "s")
    assert SECRET not in repr(s) and SECRET not in s.target


def test_cluster() -> None:
    s = RedisSettings.from_env({"REDIS_URL": "redis://10.1.1.1:7000", "REDIS_CLUSTER": "true"})
    assert s is not None and (s.mode, s.host, s.port) == ("cluster", "10.1.1.1", 7000)
    assert s.target.startswith("cluster redis://")


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"REDIS_URL": f"http://u:{SECRET}@h/0"}, "REDIS_URL: scheme http://"),
        ({"REDIS_URL": f"redis://u:{SECRET}@h:99999/0"}, "REDIS_URL: not a valid URL"),
        ({"REDIS_URL": f"redis://u:{SECRET}@h/zero"}, "REDIS_URL: database 'zero'"),
        ({"REDIS_URL": f"redis://u:{SECRET}@h/0?ssl_cert_reqs=none"}, "REDIS_URL: query option"),
        ({"REDIS_URL": f"redis://u:{SECRET}@169.254.169.254/0"}, "REDIS_URL: .*metadata"),
        ({"REDIS_URL": "redis://h/0", "REDIS_SENTINELS": "s:1"}, "REDIS_URL and REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s:1"}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINELS": "s:port", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS: port 'port'"),
        ({"REDIS_SENTINELS": " , ", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS: no sentinel"),
        ({"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not"),
        ({"REDIS_SENTINELS": "s:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_CLUSTER": "1"}, "REDIS_CLUSTER and"),
        ({"REDIS_CLUSTER": "1"}, "REDIS_CLUSTER is set but REDIS_URL"),
        ({"REDIS_URL": "redis://h/0", "REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER: expected"),
        ({"REDIS_URL": "redis://h/3", "REDIS_CLUSTER": "1"}, "only database 0"),
        ({"REDIS_URL": "unix:///s.sock", "REDIS_CLUSTER": "1"}, "over TCP"),
        ({"REDIS_URL": "redis://h/0", "REDIS_TLS": "1"}, "REDIS_TLS is set but REDIS_SENTINELS is not"),
        ({"REDIS_URL": "redis://h/0", "REDIS_USERNAME": "u"}, "REDIS_USERNAME .* without a password"),
        ({"REDIS_PASSWORD": SECRET}, "REDIS_PASSWORD is set but neither"),
        ({"REDIS_SENTINELS": "s:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_DB": "x"}, "REDIS_DB: expected an integer"),
    ],
)
def test_bad_settings_name_the_variable_and_never_the_password(env: dict[str, str], names: str) -> None:
    with pytest.raises(RedisSettingsError, match=names) as caught:
        RedisSettings.from_env(env)
    assert SECRET not in str(caught.value)


def test_creating_clients_opens_nothing() -> None:
    for env in (
        {"REDIS_URL": "redis://127.0.0.1:1/0"},
        {"REDIS_SENTINELS": "127.0.0.1:1", "REDIS_SENTINEL_MASTER": "m"},
        {"REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_CLUSTER": "1"},
    ):
        settings = RedisSettings.from_env(env)
        assert settings is not None
        assert settings.client(socket_timeout=1) is not None  # nothing listens on port 1: nothing was tried
