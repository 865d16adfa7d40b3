"""CPU accounting around a measured run: was the gateway the bottleneck, and was its core its own?"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path

from .settings import Settings


@dataclasses.dataclass(frozen=True)
class CpuUse:
    """CPU use during the measured run, in % of one CPU.

    The CPUs' busy shares come from /proc/stat and count every process on the machine; `gateway_pct` is the
    gateway's own process group. Its CPU near 100% busy with the gateway well below that means something else
    ran on its core (a build, a test run): a disturbed measurement. Steal is time the hypervisor gave away.
    """

    load_cpu_busy_pct: float
    gateway_cpu_busy_pct: float
    gateway_pct: float | None
    steal_pct: float


@dataclasses.dataclass(frozen=True)
class CpuSample:
    cpus: dict[int, tuple[int, int, int]]  # per CPU: busy, steal and total jiffies
    group_jiffies: int | None  # None: no gateway process (the direct target)


def sample_cpu(pgid: int | None) -> CpuSample:
    cpus: dict[int, tuple[int, int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        match = re.match(r"cpu(\d+)\s+(.*)", line)
        if match:
            # user nice system idle iowait irq softirq steal (guest time is already counted in user)
            values = [int(v) for v in match.group(2).split()][:8]
            idle, steal = values[3] + values[4], values[7]
            cpus[int(match.group(1))] = (sum(values) - idle - steal, steal, sum(values))
    return CpuSample(cpus, group_jiffies(pgid) if pgid is not None else None)


def group_jiffies(pgid: int) -> int:
    """utime + stime of the live processes (all their threads) in a process group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # After the ")" that closes the command name: state ppid pgrp ... utime (11th) stime (12th)
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total


def cpu_use(before: CpuSample, after: CpuSample, settings: Settings) -> CpuUse:
    def share(cpu: int, index: int) -> float:
        total = after.cpus[cpu][2] - before.cpus[cpu][2]
        return 100.0 * (after.cpus[cpu][index] - before.cpus[cpu][index]) / total if total else 0.0

    # The gateway CPU's jiffies over the interval are the 100% its process time is a share of.
    interval = after.cpus[settings.gateway_cpu][2] - before.cpus[settings.gateway_cpu][2]
    gateway = None
    if before.group_jiffies is not None and after.group_jiffies is not None and interval:
        gateway = 100.0 * (after.group_jiffies - before.group_jiffies) / interval
    return CpuUse(
        load_cpu_busy_pct=share(settings.load_cpu, 0),
        gateway_cpu_busy_pct=share(settings.gateway_cpu, 0),
        gateway_pct=gateway,
        steal_pct=max(share(settings.load_cpu, 1), share(settings.gateway_cpu, 1)),
    )
