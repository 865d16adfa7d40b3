"""Stampede: fifty model-sync agents, one S3 server, one Redis. A new version reaches every agent, the store never
serves more concurrent downloads of the artifact than MODEL_SYNC_MAX_CONCURRENT, and a holder killed in the middle
of its download holds the rest up by at most one lease TTL.

The agents are the product's `ModelSyncer`, ten per process as asyncio tasks (tests/harness/model_sync_fleet.py),
each with its own volume, object-store client and Redis client; five such processes make the fifty. They talk to
moto's S3 server through a counting proxy (tests/harness/s3_counting_proxy.py) that listens on one port per
process and streams answers at a fixed rate: the concurrency asserted is what the S3 side saw, attributed to a
process by the port the request came in on, not what the agents say about themselves. The rate makes each
download take about a quarter of a second, so that downloads not kept apart by the lease would overlap (the run
with a bound of three shows that they do).

Every volume starts with v1 installed; the test then points CURRENT at v2 and waits for every manifest.
Convergence time and peak concurrency are printed (run with -s to see them); bench/README.md quotes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness.moto_s3 import MotoS3
from harness.processes import ManagedProcess, child_env, wait_until
from harness.redis_server import RedisServer
from harness.s3_counting_proxy import CountingProxy, Transfer
from routeiq_model_sync import registry
from routeiq_model_sync.volume import artifact_file, install, installed
from routeiq_shared.manifest import Manifest
from routeiq_shared.objectstore import S3Store, parse_store_uri
from routeiq_shared.signing import generate_keypair, load_private_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FLEET_SCRIPT = Path(__file__).resolve().parents[1] / "harness" / "model_sync_fleet.py"
NAME = "router"
PROCESSES = 5
AGENTS_PER_PROCESS = 10
ARTIFACT_BYTES = 8 * 1024 * 1024  # v2: random bytes (the agent never unpickles; the gateway does, not here)
PROXY_RATE = 32e6  # bytes/s per download at the store: ~0.26 s for one artifact
LEASE_TTL_MS = 2000
POLL_INTERVAL_S = 0.5
# LeaseSemaphore.acquire polls every 0.5 s jittered ±50 %: a waiter may look up to 0.75 s after a permit frees.
ACQUIRE_POLL_MAX_S = 0.75
SCHEDULING_SLACK_S = 0.5  # seven busy processes on two cores
LEASE_KEYS = f"routeiq:lease:model-download:{NAME}:*"


@dataclass(frozen=True)
class Published:
    v1: Manifest
    v2: Manifest
    v1_file: Path


class Fleet:
    """`processes` agent processes of `per_process` agents each, every volume with v1 installed, the counting
    proxy in front of moto."""

    def __init__(
        self,
        root: Path,
        moto: MotoS3,
        bucket: str,
        redis_url: str,
        public_key: Path,
        max_concurrent: int,
        processes: int,
        per_process: int,
    ) -> None:
        self.root = root
        self.moto = moto
        self.bucket = bucket
        self.registry = f"s3://{bucket}/models/"
        self.redis_url = redis_url
        self.public_key = public_key
        self.max_concurrent = max_concurrent
        self.process_count = processes
        self.per_process = per_process
        self.agents = processes * per_process
        self.proxy = CountingProxy(moto.endpoint_url, listeners=processes, rate_bytes_per_s=PROXY_RATE)
        self.processes: dict[int, ManagedProcess] = {}
        self._stopped: list[ManagedProcess] = []

    def models_dir(self, agent: int) -> Path:
        return self.root / f"agent-{agent}" / "models"

    def agents_of(self, process: int) -> range:
        return range(process * self.per_process, (process + 1) * self.per_process)

    def seed(self, v1: Manifest, v1_file: Path) -> None:
        """v1 already serving on every volume, installed the way the agent installs."""
        for agent in range(self.agents):
            models = self.models_dir(agent)
            models.mkdir(parents=True)
            tmp = models / ".seed"
            shutil.copyfile(v1_file, tmp)
            install(models, v1, tmp)

    def env(self, process: int) -> dict[str, str]:
        s3 = self.moto.env()
        # Process k reaches the store through proxy listener k, which is how the proxy knows who asked.
        s3["AWS_ENDPOINT_URL_S3"] = s3["AWS_ENDPOINT_URL"] = self.proxy.url(process)
        return child_env(
            {
                **s3,
                "MODEL_REGISTRY": self.registry,
                "MODEL_NAMES": NAME,
                "MODEL_SYNC_INTERVAL": str(POLL_INTERVAL_S),
                "MODEL_REQUIRE_SIGNATURE": "true",
                "MODEL_SIGNING_PUBLIC_KEY": str(self.public_key),
                "REDIS_URL": self.redis_url,
                "MODEL_SYNC_MAX_CONCURRENT": str(self.max_concurrent),
                "MODEL_SYNC_LEASE_TTL_MS": str(LEASE_TTL_MS),
                "MODEL_SYNC_LOCK_WAIT": "120",
            }
        )

    def start_process(self, process: int) -> ManagedProcess:
        argv = [sys.executable, str(FLEET_SCRIPT), "--root", str(self.root)]
        argv += ["--agents", str(self.per_process), "--first", str(process * self.per_process)]
        name = f"fleet-{process}" + ("-restarted" if process in self.processes else "")
        if process in self.processes:
            self._stopped.append(self.processes[process])
        managed = ManagedProcess(argv, self.root / f"{name}.log", env=self.env(process), name=name).start()
        self.processes[process] = managed
        return managed

    @staticmethod
    def wait_ready(processes: list[ManagedProcess], timeout: float = 60.0) -> None:
        for managed in processes:
            managed.wait_ready(lambda m=managed: '"fleet_ready"' in m.log_text(), timeout, "fleet_ready")

    def start(self) -> None:
        self.proxy.start()
        self.wait_ready([self.start_process(k) for k in range(self.process_count)])

    def stop(self) -> None:
        for managed in [*self.processes.values(), *self._stopped]:
            managed.stop()
        self.proxy.stop()

    def versions(self) -> list[str | None]:
        out = []
        for agent in range(self.agents):
            local = installed(self.models_dir(agent), NAME)
            out.append(local.version if local else None)
        return out

    def wait_converged(self, version: str, since: float, timeout: float) -> float:
        """Seconds from `since` until every volume's manifest names `version`."""
        deadline = since + timeout
        while True:
            versions = self.versions()
            if all(v == version for v in versions):
                return time.monotonic() - since
            if time.monotonic() > deadline:
                behind = {f"agent-{i}": v for i, v in enumerate(versions) if v != version}
                raise AssertionError(f"not converged on {version} after {timeout:.0f} s: {behind}\n{self.log_tails()}")
            time.sleep(0.05)

    def log_tails(self) -> str:
        return "\n".join(f"---- {m.name} ----\n{m.log_tail(1500)}" for m in self.processes.values())


class MakeFleet(Protocol):
    def __call__(self, max_concurrent: int, processes: int = PROCESSES, per_process: int = AGENTS_PER_PROCESS) -> Fleet:
        """A started fleet: v1 on every volume, every agent past its first pass."""
        ...


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def model_downloads(proxy: CountingProxy) -> list[Transfer]:
    return [t for t in proxy.transfers() if t.path.endswith(f"/{NAME}/v2/model.pkl")]


async def publish_versions(moto: MotoS3, bucket: str, key: Ed25519PrivateKey, workdir: Path) -> Published:
    """v1 (small) as CURRENT and v2 (ARTIFACT_BYTES) not yet current, straight to moto, not through the proxy."""
    store = S3Store(parse_store_uri(f"s3://{bucket}/models/"), moto.endpoint_url)
    try:
        v1_file = workdir / "v1.pkl"
        v1_file.write_bytes(os.urandom(4096))
        v2_file = workdir / "v2.pkl"
        v2_file.write_bytes(os.urandom(ARTIFACT_BYTES))
        v1 = registry.build_manifest(NAME, "v1", v1_file, {"accuracy": 0.8}, "sha256:stampede", 1)
        v1 = await registry.publish(store, v1, v1_file, key, set_current=True)
        v2 = registry.build_manifest(NAME, "v2", v2_file, {"accuracy": 0.9}, "sha256:stampede", 1)
        v2 = await registry.publish(store, v2, v2_file, key, set_current=False)
    finally:
        await store.close()
    return Published(v1, v2, v1_file)


def point_current_at(fleet: Fleet, version: str) -> float:
    """The operator's move (`routeiq-model-sync rollback --to --key`, which signs CURRENT); returns when it was done.
    The private key lies beside the public key the fleet trusts (fleet_factory writes both)."""
    key = load_private_key(fleet.public_key.with_name("signing.key"))

    async def run() -> None:
        store = S3Store(parse_store_uri(fleet.registry), fleet.moto.endpoint_url)
        try:
            await registry.rollback(store, NAME, version, key)
        finally:
            await store.close()

    asyncio.run(run())
    return time.monotonic()


@pytest.fixture
def fleet_factory(
    tmp_path: Path, moto_s3: MotoS3, s3_bucket: str, fresh_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[MakeFleet, Published]]:
    """A signing key, v1 (CURRENT) and v2 published in a new bucket, and a factory of started fleets; every fleet
    (its agent processes and its proxy) is stopped at teardown."""
    for key, value in moto_s3.env().items():
        if key.startswith("AWS_") and "ENDPOINT" not in key:
            monkeypatch.setenv(key, value)  # credentials and region for the test's own publishing client
    private_pem, public_pem = generate_keypair()
    (tmp_path / "signing.key").write_bytes(private_pem)
    (tmp_path / "signing.pub").write_bytes(public_pem)
    published = asyncio.run(publish_versions(moto_s3, s3_bucket, load_private_key(tmp_path / "signing.key"), tmp_path))
    fleets: list[Fleet] = []

    def make(max_concurrent: int, processes: int = PROCESSES, per_process: int = AGENTS_PER_PROCESS) -> Fleet:
        root = tmp_path / f"fleet-{len(fleets) + 1}"
        public_key = tmp_path / "signing.pub"
        fleet = Fleet(root, moto_s3, s3_bucket, fresh_redis.url, public_key, max_concurrent, processes, per_process)
        fleets.append(fleet)
        fleet.seed(published.v1, published.v1_file)
        fleet.start()
        return fleet

    try:
        yield make, published
    finally:
        for fleet in fleets:
            fleet.stop()


def check_all_on_v2(fleet: Fleet, published: Published) -> None:
    for agent in range(fleet.agents):
        models = fleet.models_dir(agent)
        manifest = installed(models, NAME)
        assert manifest is not None and manifest.version == "v2", f"agent-{agent}"
        assert manifest.artifact.sha256 == published.v2.artifact.sha256
        assert sha256_of(artifact_file(models, NAME)) == published.v2.artifact.sha256, f"agent-{agent}"
        previous = installed(models, NAME, "previous")
        assert previous is not None and previous.version == "v1", f"agent-{agent} kept no previous version"


def kill_a_holder_mid_download(fleet: Fleet, r: redis.Redis, after_downloads: int) -> tuple[Transfer, float, float]:
    """Once `after_downloads` downloads have started, wait for one that is well under way with its permit held in
    Redis, and SIGKILL the process it came from. Returns (its transfer, when it was killed, seconds of lease
    left on the dead holder's permit)."""
    deadline = time.monotonic() + 30
    while True:
        downloads = model_downloads(fleet.proxy)
        flying = [t for t in downloads if t.in_flight]
        holders = r.keys(LEASE_KEYS)
        if len(downloads) >= after_downloads and len(flying) == 1 and len(holders) == 1:
            victim = flying[0]
            if time.monotonic() - victim.started > 0.1:  # well into its download, bytes flowing
                break
        assert time.monotonic() < deadline, f"no download in flight with a held permit\n{fleet.log_tails()}"
        time.sleep(0.005)
    killed = fleet.processes[victim.listener]
    os.killpg(killed.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    lease_left_s = r.pttl(holders[0]) / 1000
    killed.wait_exit(5)
    return victim, killed_at, lease_left_s


@pytest.mark.parametrize("max_concurrent", [1, 3])
def test_fifty_agents_converge_without_exceeding_the_download_bound(
    fleet_factory: tuple[MakeFleet, Published], fresh_redis: RedisServer, max_concurrent: int
) -> None:
    make, published = fleet_factory
    fleet = make(max_concurrent)
    assert model_downloads(fleet.proxy) == []  # v1 is installed everywhere: nothing to fetch yet

    t0 = point_current_at(fleet, "v2")
    took = fleet.wait_converged("v2", t0, timeout=90)

    check_all_on_v2(fleet, published)
    downloads = model_downloads(fleet.proxy)
    # One complete download per agent, ten per process, and not one more: nobody fetched twice.
    assert len(downloads) == fleet.agents, [(t.listener, t.complete) for t in downloads]
    # 206: the agent asks for a range (at most the manifest's size + 1 bytes), which here is the whole artifact.
    assert all(t.complete and t.status == 206 and t.bytes_sent == ARTIFACT_BYTES for t in downloads), [
        (t.status, t.bytes_sent, t.complete) for t in downloads
    ]
    per_process = {k: sum(1 for t in downloads if t.listener == k) for k in range(PROCESSES)}
    assert per_process == dict.fromkeys(range(PROCESSES), AGENTS_PER_PROCESS)
    peak = fleet.proxy.peak
    print(
        f"\nstampede: {fleet.agents} agents in {PROCESSES} processes, MODEL_SYNC_MAX_CONCURRENT={max_concurrent}, "
        f"{ARTIFACT_BYTES / 1e6:.1f} MB artifact at {PROXY_RATE / 1e6:.0f} MB/s per download: converged in "
        f"{took:.1f} s, peak concurrent downloads seen by S3 {peak}"
    )
    assert peak <= max_concurrent
    # The other half of the claim: downloads do overlap when the bound allows it, so a bound of 1 being respected
    # is the lease at work and not downloads too short to meet.
    assert peak == max_concurrent
    # Every permit given back. The last installer writes its manifest inside its lease and releases right
    # after, so allow it a moment: 0.5 s, well under the 1.3 s or more a renewed key has left, so a permit
    # left to expire instead of released still fails here.
    client = fresh_redis.client()
    wait_until(lambda: client.keys(LEASE_KEYS) == [], timeout=0.5, message="every download permit released")


def test_a_holder_killed_mid_download_delays_the_rest_by_at_most_one_lease(
    fleet_factory: tuple[MakeFleet, Published], fresh_redis: RedisServer
) -> None:
    make, published = fleet_factory
    fleet = make(1)
    r = fresh_redis.client()
    t0 = point_current_at(fleet, "v2")

    victim, killed_at, lease_left_s = kill_a_holder_mid_download(fleet, r, after_downloads=3)
    deadline = killed_at + LEASE_TTL_MS / 1000 + 10
    while not (after := [t for t in model_downloads(fleet.proxy) if t.started > killed_at]):
        assert time.monotonic() < deadline, f"nobody downloaded after the kill\n{fleet.log_tails()}"
        time.sleep(0.005)
    gap = after[0].started - killed_at
    print(
        f"\nstampede kill: holder in fleet process {victim.listener} SIGKILLed "
        f"{killed_at - victim.started:.2f} s into its download; its lease had {lease_left_s:.2f} s left; the next "
        f"download started {gap:.2f} s after the kill (lease TTL {LEASE_TTL_MS / 1000:.1f} s)"
    )
    assert after[0].listener != victim.listener
    assert lease_left_s > 0  # the dead holder's permit was still held when it died
    # Nobody started while the dead holder's lease was alive, and the wait was at most one TTL (plus one poll).
    assert gap >= lease_left_s - 0.05
    assert gap <= LEASE_TTL_MS / 1000 + ACQUIRE_POLL_MAX_S + SCHEDULING_SLACK_S

    # The half-done download never reached a volume: each of the killed process's agents serves v1, or v2 if it
    # finished its download before the kill, and its artifact is the one its manifest names.
    transfers = [t for t in model_downloads(fleet.proxy) if t.listener == victim.listener]
    victim_transfer = next(t for t in transfers if t.started == victim.started)
    assert not victim_transfer.complete and victim_transfer.bytes_sent < ARTIFACT_BYTES
    on_v2 = 0
    for agent in fleet.agents_of(victim.listener):
        models = fleet.models_dir(agent)
        manifest = installed(models, NAME)
        assert manifest is not None and manifest.version in ("v1", "v2"), f"agent-{agent}"
        assert sha256_of(artifact_file(models, NAME)) == manifest.artifact.sha256, f"agent-{agent}"
        on_v2 += manifest.version == "v2"
    assert on_v2 == sum(1 for t in transfers if t.complete)

    # The process comes back (a pod restart): its agents catch up, and the bound held throughout.
    Fleet.wait_ready([fleet.start_process(victim.listener)])
    took = fleet.wait_converged("v2", t0, timeout=90)
    check_all_on_v2(fleet, published)
    print(f"stampede kill: all {fleet.agents} agents on v2 {took:.1f} s after CURRENT changed, restart included")
    assert fleet.proxy.peak == 1
    assert sum(1 for t in model_downloads(fleet.proxy) if t.complete) == fleet.agents


def test_a_download_killed_midway_leaves_no_partial_file_on_the_volume(
    fleet_factory: tuple[MakeFleet, Published], fresh_redis: RedisServer
) -> None:
    """An agent killed mid-download and started again must not leave the partial artifact behind: the volume is
    an emptyDir of limited size shared with the gateway, and an artifact may be 500 MB."""
    make, published = fleet_factory
    fleet = make(1, processes=2, per_process=2)
    t0 = point_current_at(fleet, "v2")
    victim, _, _ = kill_a_holder_mid_download(fleet, fresh_redis.client(), after_downloads=1)
    Fleet.wait_ready([fleet.start_process(victim.listener)])
    fleet.wait_converged("v2", t0, timeout=60)
    check_all_on_v2(fleet, published)
    # In a pod (shareProcessNamespace: true, so the agent is not pid 1) a restarted agent gets a new pid, as here.
    leftovers = sorted(
        f"{path.relative_to(fleet.root)} ({path.stat().st_size} bytes)"
        for agent in range(fleet.agents)
        for path in fleet.models_dir(agent).glob(".*")
    )
    assert leftovers == [], "partial downloads left on the volume after the agent restarted"
