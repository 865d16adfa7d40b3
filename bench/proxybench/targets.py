"""The upstream (nginx) and the targets under load. Each target is a context manager yielding a Running."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from .processes import BenchError, child_env, child_process, free_port, log_tail, pinned, port_open, wait_until
from .settings import (
    BENCH_DIR,
    CHAT_PATH,
    GEMINI_MODEL,
    MASTER_KEY,
    MMLU_CSV,
    MODEL,
    READINESS_PATH,
    STREAM_CHUNKS,
    STREAM_TARGETS,
    UPSTREAM_KEY,
    Settings,
)

NGINX_CONF = BENCH_DIR / "upstream" / "nginx.conf"
BARE_PASSTHROUGH = BENCH_DIR / "baselines" / "bare_passthrough.py"
BENCH_ROUTER = BENCH_DIR / "baselines" / "bench_router.py"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
BENCH_ADMIN_KEY = "sk-bench-admin"


@dataclasses.dataclass(frozen=True)
class Upstream:
    port: int

    @property
    def chat_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CHAT_PATH}"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@dataclasses.dataclass(frozen=True)
class Running:
    """A target ready for load: the URL wrk hits, and the process group its CPU time is counted for."""

    url: str
    pgid: int | None
    stream: bool = False  # wrk asks for a stream (bench/wrk/chat.lua, BENCH_STREAM)
    api_key: str = MASTER_KEY  # what wrk sends: the master key, or a virtual key (routeiq-keys)


# The standard library's client, with no proxy handler: every hop stays on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, timeout_s: float = 1.0) -> int | None:
    try:
        with _OPENER.open(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def chat_request_body() -> bytes:
    # The same request as bench/wrk/chat.lua sends.
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    return json.dumps({"model": MODEL, "messages": messages, "max_tokens": 64, "temperature": 0}).encode()


def write_bodies(prompts_csv: Path, workdir: Path) -> Path:
    """One chat completion body a line for wrk/prompts.lua: the odd rows' prompts of the CSV (routeiq-auto's
    router trains on the even rows), with the system message and options of chat_request_body()."""
    import csv

    try:
        with prompts_csv.open(newline="", encoding="utf-8") as fh:
            prompts = [row["prompt"] for row in csv.DictReader(fh)][1::2]
    except (OSError, KeyError, csv.Error) as exc:
        raise BenchError(f"cannot read prompts from {prompts_csv}: {exc!r}") from exc
    if not prompts:
        raise BenchError(f"no prompts in {prompts_csv}")
    path = workdir / "bodies.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for prompt in prompts:
            messages = [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": prompt},
            ]
            body = {"model": MODEL, "messages": messages, "max_tokens": 64, "temperature": 0}
            out.write(json.dumps(body, separators=(",", ":")) + "\n")
    return path


def _sse(lines: list[str]) -> str:
    return "".join(line + "\n\n" for line in lines)


def openai_stream() -> str:
    """STREAM_CHUNKS content chunks of a chat completion, a finish chunk and [DONE], as OpenAI streams them."""
    head = '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model",'
    chunks = [head + '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}']
    chunks += [head + '"choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}'] * STREAM_CHUNKS
    chunks += [head + '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}']
    return _sse([f"data: {c}" for c in chunks] + ["data: [DONE]"])


def anthropic_stream() -> str:
    """The same answer as Anthropic's Messages API streams it: STREAM_CHUNKS text deltas between its events."""
    start = (
        '{"type":"message_start","message":{"id":"msg_bench","type":"message","role":"assistant",'
        '"model":"bench-model","content":[],"stop_reason":null,"stop_sequence":null,'
        '"usage":{"input_tokens":24,"output_tokens":1}}}'
    )
    events = [("message_start", start)]
    events.append(
        ("content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}')
    )
    delta = '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"word "}}'
    events += [("content_block_delta", delta)] * STREAM_CHUNKS
    events.append(("content_block_stop", '{"type":"content_block_stop","index":0}'))
    end = (
        '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":100}}'
    )
    events += [("message_delta", end), ("message_stop", '{"type":"message_stop"}')]
    return "".join(f"event: {name}\ndata: {data}\n\n" for name, data in events)


def gemini_stream() -> str:
    """The same answer as Gemini's streamGenerateContent (alt=sse) sends it: STREAM_CHUNKS responses of one part."""
    head = '{"candidates":[{"content":{"parts":[{"text":"word "}],"role":"model"},"index":0'
    tail = '],"modelVersion":"bench-model","responseId":"bench-gemini"}'
    chunks = [head + "}" + tail] * (STREAM_CHUNKS - 1)
    usage = '"usageMetadata":{"promptTokenCount":24,"candidatesTokenCount":100,"totalTokenCount":124}'
    chunks.append(head + ',"finishReason":"STOP"}' + tail[:1] + "," + usage + tail[1:])
    return "".join(f"data: {c}\r\n\r\n" for c in chunks)


def check_chat_completion(url: str, stream: bool = False, api_key: str = MASTER_KEY) -> None:
    """One real request before measuring: a 401 or a 502 answered fast must not pass for throughput."""
    body = json.loads(chat_request_body())
    request = urllib.request.Request(
        url,
        data=json.dumps({**body, "stream": True}).encode() if stream else chat_request_body(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
    )
    try:
        with _OPENER.open(request, timeout=30) as response:
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        raise BenchError(f"check request got HTTP {exc.code}: {exc.read()[:500]!r}") from exc
    except OSError as exc:
        raise BenchError(f"check request failed: {exc}") from exc
    if status != 200:
        raise BenchError(f"check request got HTTP {status}: {raw[:500]!r}")
    if stream:
        deltas = raw.count(b'"content":"word "')
        if deltas != STREAM_CHUNKS or not raw.rstrip().endswith(b"data: [DONE]"):
            raise BenchError(f"check request: {deltas} content chunks, not {STREAM_CHUNKS}: {raw[-500:]!r}")
        return
    try:
        body = json.loads(raw)
        content = body["choices"][0]["message"]["content"]
        total_tokens = body["usage"]["total_tokens"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BenchError(f"check request: not a chat.completion with usage: {raw[:500]!r}") from exc
    if body.get("object") != "chat.completion" or not isinstance(content, str) or not content:
        raise BenchError(f"check request: unexpected chat.completion: {raw[:500]!r}")
    if not total_tokens:
        raise BenchError(f"check request: usage lost on the way: {raw[:500]!r}")


@contextlib.contextmanager
def run_nginx(settings: Settings, workdir: Path) -> Iterator[Upstream]:
    prefix = workdir / "nginx"
    prefix.mkdir()
    upstream = Upstream(port=free_port())
    conf = NGINX_CONF.read_text().replace("@PREFIX@", str(prefix)).replace("@PORT@", str(upstream.port))
    streams = (("openai.sse", openai_stream()), ("anthropic.sse", anthropic_stream()), ("gemini.sse", gemini_stream()))
    for name, text in streams:
        (prefix / name).write_text(text)
        (prefix / name).chmod(0o644)
    # nginx's workers (another user when the master runs as root) read those files through the temp dir.
    workdir.chmod(0o755)
    prefix.chmod(0o755)
    (prefix / "nginx.conf").write_text(conf)
    # -e: the error log before the config is read, so nginx never opens /var/log/nginx.
    argv = ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")]
    log_path = workdir / "nginx.out"
    with child_process(pinned(settings.load_cpu, argv), log_path) as proc:
        try:
            wait_until(lambda: port_open(upstream.port), proc, log_path, timeout_s=10)
            check_chat_completion(upstream.chat_url)
        except BenchError as exc:
            raise BenchError(f"nginx upstream: {exc}\n{log_tail(prefix / 'error.log')}") from exc
        yield upstream


def gateway_config(upstream: Upstream, provider: str = "openai", stream: bool = False) -> str:
    # LiteLLM-compatible and the same file for RouteIQ and LiteLLM; `openai/` puts RouteIQ on its native path,
    # `anthropic/` on its translation path. JSON strings are valid YAML scalars: no YAML library needed.
    q = json.dumps
    root = f"http://127.0.0.1:{upstream.port}" + ("/stream" if stream else "")
    # LiteLLM appends /v1/messages to anthropic's api_base, /models/{model}:… to gemini's.
    api_base = root + "/v1" if provider == "openai" else root
    return (
        "model_list:\n"
        f"  - model_name: {q(MODEL)}\n"
        "    litellm_params:\n"
        f"      model: {q(provider + '/' + (GEMINI_MODEL if provider == 'gemini' else MODEL))}\n"
        f"      api_base: {q(api_base)}\n"
        f"      api_key: {q(UPSTREAM_KEY)}\n"
        "general_settings:\n"
        f"  master_key: {q(MASTER_KEY)}\n"
    )


@contextlib.contextmanager
def run_gateway(
    name: str,
    argv: list[str],
    port: int,
    settings: Settings,
    workdir: Path,
    env: dict[str, str] | None = None,
    make_key: Callable[[], str] | None = None,
) -> Iterator[Running]:
    log_path = workdir / f"{name}.log"
    stream = name in STREAM_TARGETS
    with child_process(pinned(settings.gateway_cpu, argv), log_path, child_env(env)) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_status(base + READINESS_PATH) == 200, proc, log_path, settings.ready_timeout_s)
        try:
            api_key = make_key() if make_key is not None else MASTER_KEY
            check_chat_completion(base + CHAT_PATH, stream, api_key)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{log_tail(log_path)}") from exc
        yield Running(base + CHAT_PATH, proc.pid, stream, api_key)
        if proc.poll() is not None:
            raise BenchError(f"exited with code {proc.returncode} during the run:\n{log_tail(log_path)}")


@contextlib.contextmanager
def target_direct(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    yield Running(upstream.chat_url, None)


@contextlib.contextmanager
def target_bare_python(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    port = free_port()
    argv = [str(settings.python), str(BARE_PASSTHROUGH), "--port", str(port), "--upstream", upstream.chat_url]
    with run_gateway("bare-python", argv, port, settings, workdir) as running:
        yield running


def auto_config(upstream: Upstream) -> str:
    # MODEL is a virtual model here: a learned router picks one of two groups (both the same nginx upstream).
    q = json.dumps
    groups = "".join(
        f"  - model_name: {q(group)}\n"
        "    litellm_params:\n"
        f"      model: {q('openai/' + MODEL)}\n"
        f"      api_base: {q(upstream.api_base)}\n"
        f"      api_key: {q(UPSTREAM_KEY)}\n"
        for group in ("bench-weak", "bench-strong")
    )
    router = f'{{"name": {q(MODEL)}, "artifact": "bench-router", "candidates": ["bench-weak", "bench-strong"]}}'
    return (
        f"model_list:\n{groups}general_settings:\n  master_key: {q(MASTER_KEY)}\nrouteiq:\n  routers:\n    - {router}\n"
    )


def _routeiq(
    name: str,
    settings: Settings,
    upstream: Upstream,
    workdir: Path,
    extra_env: dict[str, str],
    config_text: str | None = None,
    admin_port: int = 0,
    make_key: Callable[[], str] | None = None,
) -> contextlib.AbstractContextManager[Running]:
    port = free_port()
    home = workdir / name
    home.mkdir(exist_ok=True)  # routeiq-auto has written its models/ already
    config = home / "config.yaml"
    config.write_text(config_text or gateway_config(upstream))
    # The pid file, config and model dirs in the temp dir instead of the pod's /app paths.
    env = {f"ROUTEIQ_{kind}_DIR": str(home / kind.lower()) for kind in ("CONFIG", "MODELS", "RUN")}
    argv = [str(settings.routeiq_bin), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--admin-port", str(admin_port)]  # 0: no admin listener, unless a target needs one
    return run_gateway(name, argv, port, settings, workdir, {**env, **extra_env}, make_key)


@contextlib.contextmanager
def target_routeiq(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    with _routeiq("routeiq", settings, upstream, workdir, {}) as running:
        yield running


@contextlib.contextmanager
def target_routeiq_traced(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    # Every request's server span recorded and exported over OTLP/HTTP (to nginx, which accepts and drops it):
    # what tracing costs in production, where a collector is configured.
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{upstream.port}/v1/traces"}
    with _routeiq("routeiq-traced", settings, upstream, workdir, env) as running:
        yield running


@contextlib.contextmanager
def target_routeiq_auto(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    # `model: auto` traffic: every request is scored by a built-in learned router trained on MMLU (routing/
    # offloop.py decides inline or batched in a worker), against the fixed-model `routeiq` row of the same run.
    models = workdir / "routeiq-auto" / "models"
    data = settings.prompts or MMLU_CSV
    made = subprocess.run(
        [str(settings.python), str(BENCH_ROUTER), str(models), "bench-router", str(data), settings.auto_kind],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        raise BenchError(f"could not write the bench router model: {made.stderr[-2000:]}")
    env = {"MODEL_REQUIRE_SIGNATURE": "false"}
    with _routeiq("routeiq-auto", settings, upstream, workdir, env, auto_config(upstream)) as running:
        yield running


@contextlib.contextmanager
def target_routeiq_anthropic(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    config = gateway_config(upstream, "anthropic")
    with _routeiq("routeiq-anthropic", settings, upstream, workdir, {}, config) as running:
        yield running


@contextlib.contextmanager
def target_routeiq_stream(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    config = gateway_config(upstream, "openai", stream=True)
    with _routeiq("routeiq-stream", settings, upstream, workdir, {}, config) as running:
        yield running


@contextlib.contextmanager
def target_routeiq_anthropic_stream(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    config = gateway_config(upstream, "anthropic", stream=True)
    with _routeiq("routeiq-anthropic-stream", settings, upstream, workdir, {}, config) as running:
        yield running


@contextlib.contextmanager
def target_routeiq_gemini(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    config = gateway_config(upstream, "gemini")
    with _routeiq("routeiq-gemini", settings, upstream, workdir, {}, config) as running:
        yield running


@contextlib.contextmanager
def target_routeiq_gemini_stream(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    config = gateway_config(upstream, "gemini", stream=True)
    with _routeiq("routeiq-gemini-stream", settings, upstream, workdir, {}, config) as running:
        yield running


@contextlib.contextmanager
def target_litellm_anthropic(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    with _litellm("litellm-anthropic", settings, workdir, gateway_config(upstream, "anthropic")) as running:
        yield running


@contextlib.contextmanager
def target_routeiq_keys(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    # Every request authenticated by a virtual key (a team's, with models, rpm/tpm/max_parallel, a budget) from the
    # key cache, its limits enforced in Redis (two Lua scripts to admit: key and team; two to settle), its spend
    # added up and written to PostgreSQL in batches: against the master-key `routeiq` row of the run. PostgreSQL
    # and redis-server run on the load generator's CPU, as nginx does, so the gateway's core is its own.
    home = workdir / "routeiq-keys"
    home.mkdir(exist_ok=True)
    with run_postgres(settings, home) as database_url, run_redis(settings, home) as redis_url:
        migrate = [str(settings.routeiq_bin), "db", "upgrade"]
        done = subprocess.run(
            migrate, env=child_env({"DATABASE_URL": database_url}), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise BenchError(f"db upgrade failed: {done.stderr[-2000:]}")
        admin_port = free_port()

        def make_key() -> str:
            admin = f"http://127.0.0.1:{admin_port}"
            # Generous limits: enforced on every request, never reached.
            team = {
                "team_id": "bench",
                "models": [MODEL],
                "rpm_limit": 10_000_000,
                "max_parallel_requests": 10_000,
                "max_budget": 1e9,
            }
            admin_post(f"{admin}/team/new", team)
            key = {
                "team_id": "bench",
                "models": [MODEL],
                "rpm_limit": 10_000_000,
                "tpm_limit": 10**9,
                "max_budget": 1e9,
            }
            return str(admin_post(f"{admin}/key/generate", key)["key"])

        env = {"DATABASE_URL": database_url, "ADMIN_API_KEYS": BENCH_ADMIN_KEY, "REDIS_URL": redis_url}
        with _routeiq("routeiq-keys", settings, upstream, workdir, env, None, admin_port, make_key) as running:
            yield running


def admin_post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {BENCH_ADMIN_KEY}"},
    )
    try:
        with _OPENER.open(request, timeout=30) as response:
            answer: dict[str, object] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        raise BenchError(f"{url} answered HTTP {exc.code}: {exc.read()[:500]!r}") from exc


@contextlib.contextmanager
def run_postgres(settings: Settings, home: Path) -> Iterator[str]:
    """Debian's PostgreSQL 15 on a free port, data in `home` (as the `postgres` user under root); its URL."""
    if not (PG_BIN / "postgres").exists():
        raise BenchError(f"PostgreSQL 15 not found at {PG_BIN} (make setup installs it)")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="routeiq-bench-pg-"))  # not under a private temp dir: postgres enters it
    try:
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        initdb = [*as_pg, str(PG_BIN / "initdb"), "-D", str(data / "d"), "-U", "routeiq", "--auth=trust", "--no-sync"]
        done = subprocess.run(initdb, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"initdb failed: {done.stderr[-2000:]}")
        port = free_port()
        argv = [*as_pg, str(PG_BIN / "postgres"), "-D", str(data / "d"), "-p", str(port)]
        argv += ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}", "-c", "fsync=off"]
        with child_process(pinned(settings.load_cpu, argv), home / "postgres.log", child_env({})) as proc:
            log = home / "postgres.log"
            wait_until(lambda: port_open(port) and "ready to accept connections" in log.read_text(), proc, log, 60)
            yield f"postgresql://routeiq@127.0.0.1:{port}/postgres"
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def run_redis(settings: Settings, home: Path) -> Iterator[str]:
    """redis-server (no persistence) on a free port, on the load CPU; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server not found (make setup installs it)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(home)]
    log = home / "redis.log"
    with child_process(pinned(settings.load_cpu, argv), log, child_env({})) as proc:
        wait_until(lambda: port_open(port), proc, log, 30)
        yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def target_litellm(settings: Settings, upstream: Upstream, workdir: Path) -> Iterator[Running]:
    with _litellm("litellm", settings, workdir, gateway_config(upstream)) as running:
        yield running


@contextlib.contextmanager
def _litellm(name: str, settings: Settings, workdir: Path, config_text: str) -> Iterator[Running]:
    port = free_port()
    config = workdir / f"{name}-config.yaml"
    config.write_text(config_text)
    argv = [str(settings.litellm_bin), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1"]
    # Its bundled model cost map instead of a fetch from the internet (with retries) at every start.
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with run_gateway(name, argv, port, settings, workdir, env) as running:
        yield running


TargetStarter = Callable[[Settings, Upstream, Path], contextlib.AbstractContextManager[Running]]
STARTERS: dict[str, TargetStarter] = {
    "direct": target_direct,
    "bare-python": target_bare_python,
    "routeiq": target_routeiq,
    "routeiq-traced": target_routeiq_traced,
    "routeiq-auto": target_routeiq_auto,
    "routeiq-keys": target_routeiq_keys,
    "litellm": target_litellm,
    "routeiq-anthropic": target_routeiq_anthropic,
    "routeiq-stream": target_routeiq_stream,
    "routeiq-anthropic-stream": target_routeiq_anthropic_stream,
    "routeiq-gemini": target_routeiq_gemini,
    "routeiq-gemini-stream": target_routeiq_gemini_stream,
    "litellm-anthropic": target_litellm_anthropic,
}


def missing_install(name: str, settings: Settings) -> str | None:
    """Why a target can't run on this machine, or None."""
    if name == "bare-python":
        probe = [str(settings.python), "-c", "import aiohttp, uvicorn"]
        if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
            return f"{settings.python} cannot import uvicorn and aiohttp"
    if name.startswith("routeiq") and not os.access(settings.routeiq_bin, os.X_OK):
        return f"{settings.routeiq_bin} not found (make setup installs it)"
    if name.startswith("litellm") and not os.access(settings.litellm_bin, os.X_OK):
        return f"{settings.litellm_bin} not found (run: bash bench/setup_litellm.sh)"
    return None
