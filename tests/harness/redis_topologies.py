"""Redis as it runs in production, from real processes on loopback: a master, a replica and three sentinels
(Debian's `redis-sentinel`); a cluster of three masters (`redis-server --cluster-enabled yes` and
`redis-cli --cluster create`); a TLS server with an ACL user and a CA made here with `openssl`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

from .processes import ManagedProcess, child_env, free_port, wait_until
from .redis_server import RedisServer

MASTER_NAME = "routeiq-master"


def find_binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    assert found, f"{name} not found: run `make setup` (Debian packages redis-server, redis-sentinel, redis-tools)"
    return found


def kill(server: RedisServer) -> None:
    """SIGKILL: the process dies without closing anything cleanly, as a crashed node does."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.proc.wait(timeout=10)


class SentinelSet:
    """A master, one replica and three sentinels watching them (quorum 2, down after `down_after_ms`)."""

    def __init__(self, master: RedisServer, replica: RedisServer, sentinels: list[tuple[ManagedProcess, int]]):
        self.master = master
        self.replica = replica
        self.sentinels = sentinels

    @classmethod
    def start(cls, work_dir: Path, down_after_ms: int = 1000) -> SentinelSet:
        server = find_binary("redis-server")
        sentinel = find_binary("redis-sentinel")
        master = RedisServer.start(server, work_dir / "master")
        replica = RedisServer.start(server, work_dir / "replica", extra=["--replicaof", master.host, str(master.port)])
        started: list[tuple[ManagedProcess, int]] = []
        try:
            for i in range(3):
                port = free_port("127.0.0.1")
                conf = work_dir / f"sentinel{i}" / "sentinel.conf"  # a sentinel rewrites its own file
                conf.parent.mkdir(parents=True, exist_ok=True)
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {conf.parent}\n"
                    f"sentinel monitor {MASTER_NAME} {master.host} {master.port} 2\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
                    f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                    f"sentinel parallel-syncs {MASTER_NAME} 1\n"
                )
                process = ManagedProcess([sentinel, str(conf)], conf.parent / "sentinel.log", env=child_env())
                process.start()
                started.append((process, port))
            made = cls(master, replica, started)
            # Ready when every sentinel knows the other two and the replica (else no failover could happen).
            wait_until(made._all_aware, timeout=30)
        except BaseException:
            for process, _ in started:
                process.stop()
            replica.stop()
            master.stop()
            raise
        return made

    def env(self) -> dict[str, str]:
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{port}" for _, port in self.sentinels),
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }

    def master_address(self) -> tuple[str, int] | None:
        """Where the sentinels say the master is (the first one that answers)."""
        for _, port in self.sentinels:
            try:
                with redis.Redis("127.0.0.1", port, socket_timeout=1, decode_responses=True) as conn:
                    host, master_port = conn.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
                    return host, int(master_port)
            except (redis.RedisError, TypeError, ValueError):
                continue
        return None

    def wait_failover(self, old: tuple[str, int], timeout: float = 30) -> tuple[str, int]:
        """Until every sentinel names a new master and it says it is one."""

        def done() -> bool:
            addr = self.master_address()
            if addr is None or addr == old:
                return False
            try:
                with redis.Redis(addr[0], addr[1], socket_timeout=1, decode_responses=True) as conn:
                    return str(conn.execute_command("ROLE")[0]) == "master"
            except redis.RedisError:
                return False

        wait_until(done, timeout=timeout)
        found = self.master_address()
        assert found is not None
        return found

    def _all_aware(self) -> bool:
        for _, port in self.sentinels:
            try:
                with redis.Redis("127.0.0.1", port, socket_timeout=1, decode_responses=True) as conn:
                    info = conn.execute_command("SENTINEL", "MASTER", MASTER_NAME)
                    fields = dict(zip(info[::2], info[1::2], strict=True)) if isinstance(info, list) else info
                    if int(fields["num-other-sentinels"]) < 2 or int(fields["num-slaves"]) < 1:
                        return False
            except (redis.RedisError, KeyError):
                return False
        return True

    def stop(self) -> None:
        for process, _ in self.sentinels:
            process.stop()
        self.replica.stop()
        self.master.stop()


class ClusterSet:
    """Three masters sharing the 16384 slots, no replicas."""

    def __init__(self, nodes: list[RedisServer], args: list[list[str]]) -> None:
        self.nodes = nodes
        self.args = args  # each node's arguments, to start it again as itself (its dir keeps nodes.conf)

    @classmethod
    def start(cls, work_dir: Path, count: int = 3) -> ClusterSet:
        server = find_binary("redis-server")
        nodes: list[RedisServer] = []
        args: list[list[str]] = []
        try:
            for i in range(count):
                # The bus port explicitly: the default (port + 10000) does not exist for a free port above 55535.
                bus = str(free_port("127.0.0.1"))
                extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", bus]
                extra += ["--cluster-node-timeout", "2000"]
                nodes.append(RedisServer.start(server, work_dir / f"node{i}", extra=extra))
                args.append(extra)
            create = [find_binary("redis-cli"), "--cluster", "create", *(f"{n.host}:{n.port}" for n in nodes)]
            subprocess.run(
                [*create, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
                env=child_env(),
            )
            made = cls(nodes, args)
            wait_until(made.whole, timeout=30)
        except BaseException:
            for node in nodes:
                node.stop()
            raise
        return made

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.nodes[0].url, "REDIS_CLUSTER": "1"}

    def node_of(self, key: str) -> RedisServer:
        """The node serving `key`'s slot."""
        with self.nodes[0].client(decode_responses=True) as conn:
            slot = int(conn.execute_command("CLUSTER", "KEYSLOT", key))
            for start, stop, master, *_ in conn.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= stop:
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise AssertionError(f"no node serves {key}")

    def restart(self, i: int) -> None:
        """Node i again on its port and directory: it rejoins with the slots it had."""
        node = self.nodes[i]
        work_dir = Path(node.process.log_path).parent
        self.nodes[i] = RedisServer.start(find_binary("redis-server"), work_dir, port=node.port, extra=self.args[i])

    def whole(self) -> bool:
        """Every node says cluster_state:ok."""
        for node in self.nodes:
            try:
                with node.client(decode_responses=True) as conn:
                    if "cluster_state:ok" not in conn.execute_command("CLUSTER", "INFO"):
                        return False
            except redis.RedisError:
                return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(work_dir: Path) -> TlsFiles:
    """A CA of this test's own, a server certificate for 127.0.0.1 and a client certificate, both signed by it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    openssl = find_binary("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=work_dir, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=routeiq-test-ca")  # fmt: skip
    (work_dir / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for who in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out", f"{who}.csr",
            "-subj", f"/CN=routeiq-test-{who}")  # fmt: skip
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{who}.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    d = work_dir
    return TlsFiles(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


def start_tls_server(work_dir: Path, files: TlsFiles, user: str, password: str) -> RedisServer:
    """TLS only (no plain port), client certificates required, the default user off and one ACL user on."""
    port = free_port("127.0.0.1")
    extra = [
        "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", str(files.server_cert), "--tls-key-file", str(files.server_key),
        "--tls-ca-cert-file", str(files.ca), "--tls-auth-clients", "yes",
        "--user", "default", "off",
        "--user", user, "on", f">{password}", "~*", "&*", "+@all",
    ]  # fmt: skip

    def ready() -> bool:
        try:
            with tls_client(port, files, user, password) as conn:
                return bool(conn.ping())
        except (redis.RedisError, OSError):
            return False

    server = RedisServer.start(find_binary("redis-server"), work_dir, port=port, extra=extra, ready=ready)
    server.url = f"rediss://{user}:{password}@127.0.0.1:{port}/0"
    return server


def tls_client(port: int, files: TlsFiles, user: str, password: str) -> redis.Redis:
    return redis.Redis(
        "127.0.0.1",
        port,
        username=user,
        password=password,
        ssl=True,
        ssl_ca_certs=str(files.ca),
        ssl_certfile=str(files.client_cert),
        ssl_keyfile=str(files.client_key),
        socket_timeout=2,
    )
