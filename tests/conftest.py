"""Fixtures shared by every test: the real services RouteIQ talks to, started as processes on loopback.

Session-scoped services (one process per test run): fake_upstream, moto_s3, redis_server, postgres_server.
Per-test views that reset shared state first: fresh_upstream, fresh_redis, s3_bucket, fresh_database.
Per-test: otlp_collector (in-process thread), start_gateway, start_config_sync and start_model_sync (factories;
every process stopped at teardown).
See tests/harness/README.md.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import pytest

# `import harness` must work under any --import-mode, so put tests/ on sys.path explicitly.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from harness.config_sync_process import ConfigSyncHandle, StartConfigSync, launch_config_sync  # noqa: E402
from harness.fake_upstream_control import FakeUpstream  # noqa: E402
from harness.gateway_process import GatewayHandle, StartGateway, VolumeDirs, launch_gateway  # noqa: E402
from harness.model_sync_process import ModelSyncHandle, StartModelSync, launch_model_sync  # noqa: E402
from harness.moto_s3 import MotoS3  # noqa: E402
from harness.otlp_collector import OtlpCollector  # noqa: E402
from harness.postgres_server import SETUP_HINT as PG_SETUP_HINT  # noqa: E402
from harness.postgres_server import PostgresServer, find_postgres  # noqa: E402
from harness.processes import ManagedProcess, stop_all  # noqa: E402
from harness.redis_server import SETUP_HINT, RedisServer, find_redis_server  # noqa: E402


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Safety net: fixtures stop what they start, but a process started by hand in a test and not stopped
    # must not outlive the run.
    leaked = stop_all()
    if leaked:
        sys.stderr.write(f"\nharness: stopped processes left running at session end: {leaked}\n")


class _Handle(Protocol):
    """What `_Started` needs of a handle: GatewayHandle, ConfigSyncHandle, ModelSyncHandle."""

    process: ManagedProcess
    base_url: str

    def stop(self) -> int | None: ...


H = TypeVar("H", bound=_Handle)


class _Started(Generic[H]):
    """The processes one factory fixture started: each launched with a numbered log (`<label>-N.log`); at
    teardown all stopped (last first) and their log tails printed (pytest shows them only for failing tests)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.handles: list[H] = []

    def launch(self, launcher: Callable[..., H], *args: Any, **kwargs: Any) -> H:
        """launcher(*args, log_name=…, **kwargs); a missing console script fails the test with its hint."""
        try:
            handle = launcher(*args, log_name=f"{self.label}-{len(self.handles) + 1}.log", **kwargs)
        except FileNotFoundError as exc:
            pytest.fail(str(exc), pytrace=False)
        self.handles.append(handle)
        return handle

    def __enter__(self) -> _Started[H]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in reversed(self.handles):
            handle.stop()
        for index, handle in enumerate(self.handles, 1):
            print(f"\n---- {self.label} {index} ({handle.base_url}) log tail ----\n{handle.process.log_tail()}")


# -- fake LLM provider -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUpstream]:
    """One fake OpenAI/Anthropic-compatible provider process for the whole session.

    .base_url ("http://127.0.0.1:P/v1"), .root_url ("http://127.0.0.1:P"), .add_rule(**rule),
    .add_rules([...]), .rules(), .clear_rules(), .requests(path=None), .clear_requests(), .reset(),
    .openai_client(). State is shared across tests: use `fresh_upstream` in a test that adds rules
    or reads the request log.
    """
    upstream = FakeUpstream.start(tmp_path_factory.mktemp("fake_upstream"))
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture
def fresh_upstream(fake_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The session's fake upstream with no rules and an empty request log, reset again afterwards so a
    failing test's rules can't leak into the next one."""
    fake_upstream.reset()
    try:
        yield fake_upstream
    finally:
        if fake_upstream.process.is_running():
            fake_upstream.reset()


# -- S3 ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A real `moto_server` (S3 API) process for the session.

    .endpoint_url, .client(service="s3") -> boto3 client, .new_bucket(prefix) -> unique bucket name,
    .env() -> AWS_* variables for a child process.
    """
    server = MotoS3.start(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_s3: MotoS3) -> str:
    """A new, empty bucket on the session's moto server, unique to this test."""
    return moto_s3.new_bucket()


# -- Redis -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real `redis-server` (no persistence) for the session. .url ("redis://127.0.0.1:P/0"),
    .client() -> redis.Redis, .flushall(). Fails (never skips) when the binary is missing."""
    binary = find_redis_server()
    if binary is None:
        pytest.fail(SETUP_HINT, pytrace=False)
    server = RedisServer.start(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server after FLUSHALL."""
    redis_server.flushall()
    return redis_server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that stop it (SIGSTOP), flush it or kill it; continued and
    stopped at the end whatever the test left it as."""
    binary = find_redis_server()
    if binary is None:
        pytest.fail(SETUP_HINT, pytrace=False)
    server = RedisServer.start(binary, tmp_path / "redis")
    try:
        yield server
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.stop()


# -- PostgreSQL --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 for the session (own data dir, free port, fsync off). .url(db), .create_database(),
    .pause()/.resume() (stop and start it on the same port). Fails (never skips) when the binary is missing."""
    bin_dir = find_postgres()
    if bin_dir is None:
        pytest.fail(PG_SETUP_HINT, pytrace=False)
    server = PostgresServer.start(bin_dir, tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_database(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's server, for this test only: its DATABASE_URL."""
    return postgres_server.create_database()


# -- traces ------------------------------------------------------------------------------------------


@pytest.fixture
def otlp_collector() -> Iterator[OtlpCollector]:
    """An OTLP/HTTP traces receiver on a free port, for this test only.

    .endpoint (for OTEL_EXPORTER_OTLP_ENDPOINT), .traces_endpoint (…_TRACES_ENDPOINT), .env(service_name),
    .spans(name=None) -> [SpanRecord], .wait_for_spans(predicate=None, count=1, timeout=10), .clear().
    """
    collector = OtlpCollector().start()
    try:
        yield collector
    finally:
        collector.stop()


# -- the gateway -------------------------------------------------------------------------------------


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[StartGateway]:
    """Factory: start_gateway(config, env=None, candidates=None, *, root=None, port=None,
    wait_ready=True, ready_timeout=30.0) -> GatewayHandle.

    Writes config (YAML text, or a dict dumped with yaml.safe_dump) to <root>/config/config.yaml and
    candidates (dict) to <root>/config/llm_candidates.json, creates <root>/run and <root>/models, and
    runs `<venv>/bin/routeiq-gateway --config … --host 127.0.0.1 --port <free>` with ROUTEIQ_CONFIG_DIR,
    ROUTEIQ_RUN_DIR, ROUTEIQ_MODELS_DIR pointing there, plus `env`. root defaults to tmp_path (pass
    another root to run two gateways side by side; reuse it, and `port`, to restart one). Waits for
    GET /health/readiness == 200 unless wait_ready=False. Every gateway is stopped at teardown, and its
    log tail is printed (pytest shows it only for failing tests).
    """
    with _Started[GatewayHandle]("gateway") as started:

        def start(
            config: str | Mapping[str, Any],
            env: Mapping[str, str] | None = None,
            candidates: Mapping[str, Any] | None = None,
            *,
            root: Path | None = None,
            **options: Any,
        ) -> GatewayHandle:
            dirs = VolumeDirs(root or tmp_path)
            return started.launch(launch_gateway, dirs, config, env=env, candidates=candidates, **options)

        yield start


# -- the config-sync agent ---------------------------------------------------------------------------


@pytest.fixture
def start_config_sync(tmp_path: Path) -> Iterator[StartConfigSync]:
    """Factory: start_config_sync(source, *, root=None, env=None, interval=0.5, s3_env=None) -> ConfigSyncHandle.

    Runs `<venv>/bin/routeiq-config-sync` in polling mode with CONFIG_SOURCE=source, CONFIG_SYNC_INTERVAL=
    interval, HEALTH_PORT=<free>, and ROUTEIQ_CONFIG_DIR/RUN_DIR/MODELS_DIR on <root> (default tmp_path: the
    same volume a `start_gateway` gateway uses, so the agent finds its pidfile), plus s3_env (e.g.
    moto_s3.env()) and env. Waits for GET /health/liveness == 200. Every agent is stopped at teardown and
    its log tail printed (pytest shows it only for failing tests).
    """
    with _Started[ConfigSyncHandle]("config-sync") as started:

        def start(source: str, *, root: Path | None = None, **options: Any) -> ConfigSyncHandle:
            return started.launch(launch_config_sync, VolumeDirs(root or tmp_path), source, **options)

        yield start


# -- the model-sync agent ----------------------------------------------------------------------------


@pytest.fixture
def start_model_sync(tmp_path: Path) -> Iterator[StartModelSync]:
    """Factory: start_model_sync(registry, *, root=None, env=None, interval=0.5, s3_env=None, public_key=None,
    redis_url=None, fallback_delay_max=1.0) -> ModelSyncHandle.

    Runs `<venv>/bin/routeiq-model-sync` in polling mode with MODEL_REGISTRY=registry, MODEL_SYNC_INTERVAL=
    interval, MODEL_REQUIRE_SIGNATURE=true, MODEL_SIGNING_PUBLIC_KEY=public_key (a path or PEM text, when
    given), REDIS_URL=redis_url (when given), MODEL_SYNC_FALLBACK_DELAY_MAX=fallback_delay_max, HEALTH_PORT=
    <free>, and ROUTEIQ_CONFIG_DIR/RUN_DIR/MODELS_DIR on <root> (default tmp_path: the same volume a
    `start_gateway` gateway uses, so both see one models directory and one config.yaml), plus s3_env (e.g.
    moto_s3.env()) and env (wins). Waits for GET /health/liveness == 200. Every agent is stopped at teardown
    and its log tail printed (pytest shows it only for failing tests).
    """
    with _Started[ModelSyncHandle]("model-sync") as started:

        def start(registry: str, *, root: Path | None = None, **options: Any) -> ModelSyncHandle:
            return started.launch(launch_model_sync, VolumeDirs(root or tmp_path), registry, **options)

        yield start
