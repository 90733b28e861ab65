"""Measuring on a shared machine: how much CPU other processes took while a benchmark
measured, waiting for a quiet moment, and measuring again when it was not quiet.

The machine has two CPUs and the server benchmark uses both (server on CPU 0, load on CPU 1),
so another session's test suite or a CI run shifts every number. Other processes' CPU time is
the machine's user + nice + system time (/proc/stat) minus ours: this process, the children it
has reaped (wrk, openloop.py) and the live ones it names (the server). Time the hypervisor
stole from this VM counts as other processes' too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = [
    "ATTEMPTS",
    "BUSY_LIMIT",
    "CpuTimes",
    "once",
    "others_share",
    "quietly",
    "wait_quiet",
]

BUSY_LIMIT = 0.05  # other processes' share of one CPU above which a measurement is noisy
QUIET_WAIT = 120.0  # seconds to wait for a quiet moment before measuring anyway
ATTEMPTS = 3  # measurements of one thing at most, keeping the quietest
_HZ = os.sysconf("SC_CLK_TCK")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CpuTimes:
    machine: float  # CPU-seconds of user, nice, system and stolen time, all CPUs
    ours: float  # CPU-seconds of this process, its reaped children and the live pids named
    at: float  # monotonic seconds

    @classmethod
    def now(cls, live: Sequence[int] = ()) -> CpuTimes:
        fields = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()
        user, nice, system, steal = (int(fields[i]) for i in (1, 2, 3, 8))
        own = os.times()
        ours = own.user + own.system + own.children_user + own.children_system
        for pid in live:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
            except OSError:
                continue  # exited: reaped, it is in children_* now
            utime, stime = stat.rpartition(")")[2].split()[11:13]
            ours += (int(utime) + int(stime)) / _HZ
        busy = user + nice + system + steal
        return cls(machine=busy / _HZ, ours=ours, at=time.monotonic())


def others_share(before: CpuTimes, after: CpuTimes) -> float:
    """CPU time of other processes and of the host (steal) between two snapshots, as a share
    of one CPU."""
    elapsed = after.at - before.at
    others = (after.machine - before.machine) - (after.ours - before.ours)
    return max(0.0, others / elapsed) if elapsed > 0 else 0.0


def wait_quiet(log: Callable[[str], None], live: Sequence[int] = ()) -> None:
    """Return after half a second in which other processes stayed under BUSY_LIMIT, or after
    QUIET_WAIT seconds."""
    deadline = time.monotonic() + QUIET_WAIT
    while True:
        before = CpuTimes.now(live)
        time.sleep(0.5)
        share = others_share(before, CpuTimes.now(live))
        if share <= BUSY_LIMIT:
            return
        if time.monotonic() > deadline:
            log(f"  other processes still use {share:.0%} of a CPU: measuring anyway")
            return
        log(f"  other processes use {share:.0%} of a CPU: waiting for a quiet machine")


def once(
    measure: Callable[[], T], log: Callable[[str], None], live: Sequence[int] = ()
) -> tuple[T, float]:
    """`measure()` at once, neither waiting nor measuring again (the quick smoke run): the
    result and the share of a CPU other processes took meanwhile. Same signature as
    `quietly`."""
    before = CpuTimes.now(live)
    result = measure()
    return result, others_share(before, CpuTimes.now(live))


def _attempt(
    measure: Callable[[], T], log: Callable[[str], None], live: Sequence[int]
) -> tuple[T, float]:
    wait_quiet(log, live)
    before = CpuTimes.now(live)
    result = measure()
    return result, others_share(before, CpuTimes.now(live))


def quietly(
    measure: Callable[[], T], log: Callable[[str], None], live: Sequence[int] = ()
) -> tuple[T, float]:
    """`measure()` in a quiet moment, again (up to ATTEMPTS times in all) when other processes
    took more than BUSY_LIMIT meanwhile: the quietest result and the share they took then."""
    result, share = _attempt(measure, log, live)
    for _ in range(ATTEMPTS - 1):
        if share <= BUSY_LIMIT:
            break
        log(f"  other processes took {share:.0%} of a CPU meanwhile: measuring again")
        again, again_share = _attempt(measure, log, live)
        if again_share < share:
            result, share = again, again_share
    return result, share
