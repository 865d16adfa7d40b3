"""`make run`: a local pod on embedded defaults.

Starts on loopback what a Kubernetes pod runs, and what it talks to:
  - an embedded S3 (moto's server, :4566) holding the DEMO config at s3://routeiq-local/prod/config.yaml;
  - a DEMO fake provider (:4010), so no API key and no network are needed;
  - a redis-server (:6390) for the model-sync agents' download permits, when redis-server is installed;
  - a PostgreSQL 15 (:5433, data in .run/postgres), migrated with `routeiq-gateway db upgrade`: virtual keys on,
    managed on the admin port (:4001, break-glass key sk-routeiq-admin-demo); without PostgreSQL installed
    the gateway runs on the master key alone and says so;
  - a DEMO signing key (.run/keys) and a DEMO router model, published signed to s3://routeiq-local/models/;
  - the config-sync agent: `--once` first (as the pod's init container), then polling every 2 s (health :8081);
  - the model-sync agent: polling the registry every 2 s (health :8082);
  - the gateway on :4000 (admin API :4001), serving the virtual model `auto` with the router model it swaps in live.
The pod's shared volume is `.run/` (or ROUTEIQ_LOCAL_POD_DIR). Ctrl-C (or SIGTERM) stops every process it
started, the gateway first so that it drains.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RUN = Path(os.environ.get("ROUTEIQ_LOCAL_POD_DIR", ROOT / ".run"))
DEMO_CONFIG = ROOT / "examples" / "demo" / "config.yaml"
PROVIDER_PORT = int(os.environ.get("DEMO_PROVIDER_PORT", "4010"))
GATEWAY_PORT = int(os.environ.get("ROUTEIQ_PORT", "4000"))
S3_PORT = int(os.environ.get("LOCAL_S3_PORT", "4566"))
SYNC_HEALTH_PORT = int(os.environ.get("CONFIG_SYNC_HEALTH_PORT", "8081"))
MODEL_HEALTH_PORT = int(os.environ.get("MODEL_SYNC_HEALTH_PORT", "8082"))
REDIS_PORT = int(os.environ.get("LOCAL_REDIS_PORT", "6390"))
PG_PORT = int(os.environ.get("LOCAL_PG_PORT", "5433"))
PG_BIN = Path("/usr/lib/postgresql/15/bin")
ADMIN_PORT = int(os.environ.get("ROUTEIQ_ADMIN_PORT", "4001"))
DEMO_ADMIN_KEY = "sk-routeiq-admin-demo"
BUCKET = "routeiq-local"
S3_ENV = {  # moto accepts any credentials; these only keep the AWS SDKs from looking elsewhere
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{S3_PORT}",
}


def start(name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    print(f"[local-pod] starting {name}: {' '.join(cmd)}", flush=True)
    return subprocess.Popen(cmd, env={**os.environ, **env}, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"[local-pod] {url} never came up: process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"[local-pod] {url} not ready after {seconds:.0f} s")


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):  # gateway first, so it drains while its upstream is still there
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def seed_store() -> None:
    """The bucket and the demo config, pointed at the port the demo provider really listens on."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=S3_ENV["AWS_ENDPOINT_URL_S3"],
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    demo = DEMO_CONFIG.read_text().replace("127.0.0.1:4010", f"127.0.0.1:{PROVIDER_PORT}")
    s3.put_object(Bucket=BUCKET, Key="prod/config.yaml", Body=demo.encode())


def publish_demo_router(env: dict[str, str]) -> None:
    """A signing key (kept across runs) and, on first start, version v1 of the DEMO router, set CURRENT."""
    keys = RUN / "keys"
    if not (keys / "signing.key").exists():
        subprocess.run([str(BIN / "routeiq-model-sync"), "keygen", "--out", str(keys)], check=True)
    artifact = RUN / "demo-router-v1.pkl"
    trainer = ROOT / "examples" / "demo" / "train_demo_router.py"
    subprocess.run([sys.executable, str(trainer), str(artifact)], check=True)
    publish = [str(BIN / "routeiq-model-sync"), "publish", "--registry", env["MODEL_REGISTRY"], "--name", "demo-router"]
    publish += ["--version", "v1", "--artifact", str(artifact), "--key", str(keys / "signing.key"), "--set-current"]
    subprocess.run(publish, env={**os.environ, **env}, check=True)


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse root: as root they run as the `postgres` user, which owns the data dir."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


_SCRATCH: list[Path] = []  # directories outside RUN this launcher made, removed when it stops


def _postgres_home() -> Path:
    """RUN/postgres, owned by the server's user. As root, when `postgres` cannot reach into RUN (a private
    parent directory, such as pytest's), a directory under /var/tmp named after RUN instead, said so."""
    home = RUN / "postgres"
    if os.geteuid() != 0:
        home.mkdir(parents=True, exist_ok=True)
        return home
    reachable = subprocess.run(_as_postgres(["test", "-x", str(RUN)]), check=False).returncode == 0
    if not reachable:
        import hashlib

        home = Path("/var/tmp") / f"routeiq-local-pg-{hashlib.sha256(str(RUN).encode()).hexdigest()[:12]}"
        print(f"[local-pod] the postgres user cannot enter {RUN}: PostgreSQL's data is in {home} (removed at exit)")
        _SCRATCH.append(home)
    home.mkdir(parents=True, exist_ok=True)
    shutil.chown(home, "postgres", "postgres")
    home.chmod(0o700)
    return home


def start_postgres(env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """A local PostgreSQL on PG_PORT with its data under RUN/postgres (kept across runs), or None when the
    package is not installed."""
    if not (PG_BIN / "postgres").exists():
        print("[local-pod] PostgreSQL 15 not installed (make setup): virtual keys off, master key only")
        return None
    home = _postgres_home()
    data = home / "data"
    if not (data / "PG_VERSION").exists():
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "routeiq", "--auth=trust", "-E", "UTF8"]
        subprocess.run(_as_postgres(initdb), check=True, stdout=subprocess.DEVNULL)
    cmd = [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(PG_PORT), "-c", "listen_addresses=127.0.0.1"]
    proc = start("postgres", _as_postgres([*cmd, "-c", f"unix_socket_directories={home}"]), env)
    url = f"postgresql://routeiq@127.0.0.1:{PG_PORT}/postgres"
    deadline = time.monotonic() + 30
    import psycopg

    while True:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=1) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'routeiq'").fetchone() is None:
                    conn.execute("CREATE DATABASE routeiq")
            break
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("[local-pod] PostgreSQL did not start; see the messages above") from None
            time.sleep(0.2)
    env["DATABASE_URL"] = f"postgresql://routeiq@127.0.0.1:{PG_PORT}/routeiq"
    subprocess.run([str(BIN / "routeiq-gateway"), "db", "upgrade"], env={**os.environ, **env}, check=True)
    return proc


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM to the launcher stops the pod as Ctrl-C does


def main() -> None:
    for sub in ("config", "models", "run"):
        (RUN / sub).mkdir(parents=True, exist_ok=True)
    env = {
        **S3_ENV,
        "ROUTEIQ_CONFIG_DIR": str(RUN / "config"),
        "ROUTEIQ_MODELS_DIR": str(RUN / "models"),
        "ROUTEIQ_RUN_DIR": str(RUN / "run"),
        "CONFIG_SOURCE": f"s3://{BUCKET}/prod/",
        "CONFIG_SYNC_INTERVAL": "2",
        "HEALTH_PORT": str(SYNC_HEALTH_PORT),
        "DEMO_PROVIDER_KEY": "demo-key-not-secret",
        "MODEL_REGISTRY": f"s3://{BUCKET}/models/",
        "MODEL_SYNC_INTERVAL": "2",
        "MODEL_SIGNING_PUBLIC_KEY": str(RUN / "keys" / "signing.pub"),
        "MODEL_SYNC_FALLBACK_DELAY_MAX": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        # the DEMO provider is on loopback, which the gateway's egress policy refuses unless allow-listed
        "ROUTEIQ_EGRESS_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        "PYTHONUNBUFFERED": "1",
    }
    procs: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        s3 = start("embedded S3 (moto)", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(S3_PORT)], env)
        procs.append(s3)
        wait_ready(f"http://127.0.0.1:{S3_PORT}/", s3)
        seed_store()
        if shutil.which("redis-server"):
            redis_cmd = [
                "redis-server",
                "--port",
                str(REDIS_PORT),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            procs.append(start("redis", redis_cmd, env))
            env["REDIS_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/0"
        else:
            print("[local-pod] redis-server not installed: model-sync runs degraded (random delay, no permits)")
        postgres = start_postgres(env)
        if postgres is not None:
            procs.append(postgres)
        env["ADMIN_API_KEYS"] = DEMO_ADMIN_KEY
        publish_demo_router(env)
        provider_cmd = [sys.executable, str(ROOT / "tests" / "harness" / "fake_upstream.py")]
        provider = start(
            "DEMO fake provider", [*provider_cmd, "--host", "127.0.0.1", "--port", str(PROVIDER_PORT)], env
        )
        procs.append(provider)
        wait_ready(f"http://127.0.0.1:{PROVIDER_PORT}/v1/models", provider)
        init = subprocess.run([str(BIN / "routeiq-config-sync"), "--once"], env={**os.environ, **env}, check=False)
        if init.returncode != 0:
            raise SystemExit("[local-pod] the initial config sync failed; see the messages above")
        gateway_cmd = [str(BIN / "routeiq-gateway"), "--config", str(RUN / "config" / "config.yaml")]
        gateway_cmd += ["--host", "127.0.0.1", "--port", str(GATEWAY_PORT), "--admin-port", str(ADMIN_PORT)]
        gateway = start("gateway", gateway_cmd, env)
        procs.append(gateway)
        wait_ready(f"http://127.0.0.1:{GATEWAY_PORT}/health/readiness", gateway)
        agent = start("config-sync agent", [str(BIN / "routeiq-config-sync")], env)
        procs.append(agent)
        wait_ready(f"http://127.0.0.1:{SYNC_HEALTH_PORT}/health/readiness", agent)
        models_agent = start(
            "model-sync agent", [str(BIN / "routeiq-model-sync")], {**env, "HEALTH_PORT": str(MODEL_HEALTH_PORT)}
        )
        procs.append(models_agent)
        wait_ready(f"http://127.0.0.1:{MODEL_HEALTH_PORT}/health/readiness", models_agent)
        print(
            f"\n[local-pod] ready. Gateway: http://127.0.0.1:{GATEWAY_PORT}  (DEMO provider :{PROVIDER_PORT}, "
            f"S3 :{S3_PORT}, config-sync health :{SYNC_HEALTH_PORT}, model-sync health :{MODEL_HEALTH_PORT})\n"
            f"  curl -s http://127.0.0.1:{GATEWAY_PORT}/v1/chat/completions -H 'Authorization: Bearer sk-routeiq-demo'"
            " -H 'Content-Type: application/json' \\\n"
            '    -d \'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}\'\n'
            f"  roll config: aws --endpoint-url http://127.0.0.1:{S3_PORT} s3 cp config.yaml "
            f"s3://{BUCKET}/prod/config.yaml   (README: 'Roll config')\n"
            "  learned routing: ask for model 'auto'; publish a new router model: README 'Roll a router model'\n"
            f"  a virtual key: curl -s http://127.0.0.1:{ADMIN_PORT}/key/generate -H 'Authorization: Bearer "
            f"{DEMO_ADMIN_KEY}' -d '{{\"models\": [\"gpt-4o-mini\"]}}'   (README: 'Teams and virtual keys')\n"
            "  Ctrl-C stops the pod.\n",
            flush=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = [p.args for p in procs if p.poll() is not None]
        print(f"[local-pod] a process exited: {dead}; stopping the pod", flush=True)
    except KeyboardInterrupt:
        print("\n[local-pod] stopping", flush=True)
    finally:
        stop_all(procs)
        for scratch in _SCRATCH:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
