"""Config propagation benchmark: from an operator's upload to S3 to the first request served on the new config.

One local pod on loopback: moto's S3 server, the fake upstream (tests/harness/fake_upstream.py), the real
`routeiq-gateway` and the real `routeiq-config-sync` polling every --interval seconds (±10% jitter, its
default). Each roll uploads a config adding a uniquely named model (boto3 put_object by default, so the clock
starts when S3 has answered the PUT; `--uploader cli` runs `aws s3 cp` and starts the clock when that command
exits, which is later than its PUT by the CLI's shutdown, so it understates), then asks the gateway for that
model with the openai SDK every --poll-ms until it answers. Propagation = first successful answer - upload
completion. Before each upload the script waits a random fraction of the interval, so uploads land at every
phase of the agent's poll cycle. Protocol and results: bench/README.md.

    .venv/bin/python bench/config_propagation.py [--rolls 20] [--interval 1] [--uploader boto3|cli]

Exit code: 0 when every roll was measured (goal met or not: the report says), 1 when a roll timed out or
failed, 2 when the pod could not start, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR / "tests"))  # the test harness starts and stops the processes

import openai  # noqa: E402
import yaml  # noqa: E402
from harness.config_sync_process import AwsCli, agent_env, launch_config_sync, run_config_sync  # noqa: E402
from harness.fake_upstream_control import FakeUpstream  # noqa: E402
from harness.gateway_process import VolumeDirs, launch_gateway  # noqa: E402
from harness.moto_s3 import MotoS3  # noqa: E402
from harness.processes import ProcessStartError  # noqa: E402
from routeiq_shared.config_schema import content_version  # noqa: E402

MASTER_KEY = "sk-bench-propagation"
BUCKET = "routeiq-bench"
SOURCE = f"s3://{BUCKET}/prod/"


@dataclass(frozen=True)
class Roll:
    index: int
    model: str
    version: str
    upload_s: float  # how long the upload took (aws CLI: mostly the process's start and exit)
    propagation_s: float  # first successful answer - upload completion
    polls: int  # requests sent until the first success (404s before it)


class RollFailed(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"--> {message}", file=sys.stderr, flush=True)


def config_bytes(upstream: FakeUpstream, models: list[str]) -> bytes:
    config = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {"model": f"openai/fake-{name}", "api_base": upstream.base_url, "api_key": "x"},
            }
            for name in models
        ],
        "router_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER_KEY},
    }
    return yaml.safe_dump(config, sort_keys=False).encode()


class Uploader:
    """`aws s3 cp` as a subprocess (what an operator runs), or one boto3 put_object in this process."""

    def __init__(self, kind: str, moto: MotoS3, work_dir: Path) -> None:
        self.kind = kind
        self.cli = AwsCli.for_moto(moto, work_dir)
        self.s3 = moto.client()

    def upload(self, body: bytes, key: str) -> float:
        """Upload; return time.monotonic() when the call had returned."""
        if self.kind == "cli":
            self.cli.run(*self.cli.cp_args(body, f"s3://{BUCKET}/{key}"))
        else:
            self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        return time.monotonic()


def first_answer(client: openai.OpenAI, model: str, poll_s: float, timeout: float) -> tuple[float, int]:
    """Ask for `model` every poll_s until it answers; (time.monotonic() of the answer, requests sent)."""
    deadline = time.monotonic() + timeout
    polls = 0
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    while True:
        polls += 1
        sent = time.monotonic()
        try:
            reply = client.chat.completions.create(model=model, messages=messages)
        except openai.NotFoundError:
            if time.monotonic() > deadline:
                raise RollFailed(f"{model} not served {timeout:.0f} s after the upload") from None
            time.sleep(max(0.0, poll_s - (time.monotonic() - sent)))
            continue
        if not reply.choices or not reply.choices[0].message.content:
            raise RollFailed(f"{model}: empty answer {reply}")
        return time.monotonic(), polls


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a small sample: an observed value, never interpolated."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
    return ordered[int(rank) - 1]


def environment() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    aws = subprocess.run(
        [str(Path(sys.executable).with_name("aws")), "--version"], capture_output=True, text=True, check=False
    )
    return {
        "cpu": cpu,
        "cpus": str(len(os.sched_getaffinity(0))),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "routeiq-gateway": version("routeiq-gateway"),
        "routeiq-config-sync": version("routeiq-config-sync"),
        "moto": version("moto"),
        "aws": (aws.stdout or aws.stderr).strip().split(" ")[0],
    }


def report(args: argparse.Namespace, rolls: list[Roll], env: dict[str, str], started: dt.datetime) -> str:
    values = [r.propagation_s for r in rolls]
    goal = args.interval + 1.0
    p50, p90, worst = percentile(values, 50), percentile(values, 90), max(values)
    uploads = [r.upload_s for r in rolls]
    uploader = (
        "the aws CLI (`aws s3 cp`, clock started when the command exited)"
        if args.uploader == "cli"
        else "boto3 put_object (clock started when S3 answered the PUT)"
    )
    lines = [
        f"Command (from the repository root): `.venv/bin/python bench/config_propagation.py --rolls {args.rolls} "
        f"--interval {args.interval:g}" + (f" --uploader {args.uploader}`" if args.uploader != "boto3" else "`"),
        "",
        f"Date: {started:%Y-%m-%d %H:%M} UTC. CPU: {env['cpu']} ({env['cpus']} CPUs), Linux {env['kernel']}.",
        f"Versions: Python {env['python']}, routeiq-gateway {env['routeiq-gateway']}, routeiq-config-sync "
        f"{env['routeiq-config-sync']}, moto {env['moto']}, {env['aws']}.",
        f"Pod: CONFIG_SYNC_INTERVAL={args.interval:g} s (±10% jitter), uploads by {uploader} "
        f"(took {statistics.median(uploads):.2f} s median, not counted), gateway polled every {args.poll_ms} ms.",
        "",
        "| rolls | p50 s | p90 s | max s | min s | mean s | goal: max ≤ interval + 1 s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| {len(values)} | {p50:.3f} | {p90:.3f} | {worst:.3f} | {min(values):.3f} | "
        f"{statistics.fmean(values):.3f} | {'met' if worst <= goal else 'NOT met'} ({worst:.3f} s vs {goal:g} s) |",
        "",
        "Per roll (s): " + ", ".join(f"{v:.3f}" for v in values),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, work: Path) -> list[Roll]:
    rng = random.Random(args.seed)
    with ExitStack() as stack:
        say("starting moto_server, the fake upstream, the gateway and the config-sync agent")
        moto = MotoS3.start(work / "moto")
        stack.callback(moto.stop)
        upstream = FakeUpstream.start(work / "upstream")
        stack.callback(upstream.stop)
        uploader = Uploader(args.uploader, moto, work / "aws")
        uploader.cli.make_bucket(BUCKET)
        first = config_bytes(upstream, ["steady"])
        uploader.upload(first, "prod/config.yaml")
        dirs = VolumeDirs(work / "pod").create()
        once = run_config_sync(["--once"], agent_env(dirs, SOURCE, s3_env=moto.env()))
        if once.returncode != 0:
            raise ProcessStartError(f"routeiq-config-sync --once failed: {once.stderr}")
        gateway = launch_gateway(dirs, first.decode(), log_name="gateway.log")
        stack.callback(gateway.stop)
        agent = launch_config_sync(dirs, SOURCE, s3_env=moto.env(), interval=args.interval)
        stack.callback(agent.stop)
        agent.wait_version(content_version(first, b""), timeout=args.interval * 3 + 10)
        client = gateway.openai_client(MASTER_KEY, timeout=10.0)
        stack.callback(client.close)

        rolls: list[Roll] = []
        for i in range(1, args.rolls + 1):
            model = f"bench-{i:02d}-{rng.randrange(16**6):06x}"
            body = config_bytes(upstream, ["steady", model])
            time.sleep(rng.uniform(0, args.interval))  # land at a random phase of the agent's poll cycle
            before = time.monotonic()
            uploaded = uploader.upload(body, "prod/config.yaml")
            try:
                answered, polls = first_answer(client, model, args.poll_ms / 1000, timeout=args.interval * 3 + 10)
            except RollFailed as exc:
                logs = f"--- agent log tail ---\n{agent.log_tail(3000)}\n--- gateway log tail ---\n"
                raise RollFailed(f"{exc}\n{logs}{gateway.process.log_tail(3000)}") from None
            roll = Roll(i, model, content_version(body, b""), uploaded - before, answered - uploaded, polls)
            rolls.append(roll)
            say(f"roll {i:2d}/{args.rolls}: {model} served {roll.propagation_s:.3f} s after the upload")
        reloads = sum(1 for r in gateway.json_logs() if r.get("message") == "Config reloaded")
        if reloads < args.rolls:
            raise RollFailed(f"the gateway logged {reloads} 'Config reloaded' lines for {args.rolls} rolls")
        return rolls


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rolls", type=int, default=20, help="config versions to roll (default 20)")
    parser.add_argument("--interval", type=float, default=1.0, help="CONFIG_SYNC_INTERVAL, seconds (default 1)")
    parser.add_argument("--poll-ms", type=int, default=20, help="gateway poll period while waiting (default 20)")
    parser.add_argument(
        "--uploader", choices=("boto3", "cli"), default="boto3", help="boto3 put_object (default) or `aws s3 cp`"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the upload phases and model names")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    env = environment()
    try:
        with tempfile.TemporaryDirectory(prefix="routeiq-bench-propagation-") as tmp:
            rolls = run(args, Path(tmp))
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except (ProcessStartError, FileNotFoundError, TimeoutError) as exc:
        say(f"FAILED to start the pod: {exc}")
        return 2
    except (RollFailed, RuntimeError, openai.APIError) as exc:
        say(f"FAILED: {exc}")
        return 1
    text = report(args, rolls, env, started)
    print(text)
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    out = results / f"config_propagation-{started:%Y%m%dT%H%M%SZ}.json"
    record = {"args": vars(args), "environment": env, "rolls": [asdict(r) for r in rolls], "report": text}
    out.write_text(json.dumps(record, indent=2))
    say(f"record written to {out.relative_to(REPO_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
