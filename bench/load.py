"""Load and soak: the real `costgate serve` over TLS, offered a realistic mix of reviews at
rising fixed rates until p99 passes 10 ms, then held at half that rate. Owns the "load" rows.

The mix is what the API server sends costgate under the shipped webhook configuration (its
matchConditions drop non-GPU objects and the controllers' own updates): GPU pods made by the
Argo and Job controllers (already priced: the commonest call), GPU pods, Jobs, Workflows and
CronWorkflows submitted by people (priced, some denied, some warned), and people's updates.
Each object is reviewed twice, /mutate then /validate, as the API server does. Every request
carries a fresh uid and an answer counts only when it is HTTP 200 with that uid.

For each worker count (1, then 2):

1. Start `costgate serve --workers N` on the embedded default (the shipped policy, in-memory
   state) with its self-signed TLS, and check that every request of the mix is answered.
2. Ramp: offer the mix for 10 s (after 2 s of warm-up) at 250 requests/s, then 25% more each
   step, until a step fails: p99 above 10 ms, an error, or under 97% of the offered rate
   answered. Two bisection steps between the last rate that held and the first that failed.
   The **sustained rate** is the highest rate that held.
3. Half: 30 s at 50% of the sustained rate: p50, p99, p99.9.
4. Soak (1 worker unless told otherwise): 10 minutes at 50% of the sustained rate, the
   server's resident memory (all its processes) read every 5 s: start, end and peak, and
   every request must be answered right.

One worker runs pinned to CPU 0 with the load generator (bench/openloop.py) on CPU 1. Two
workers run on both CPUs and share them with the generator: on this 2-vCPU machine that
measures contention, not scaling. Latency counts from when a request was due, not sent.

    python bench/load.py                         # ramp and half for 1 and 2 workers, soak 1
    python bench/load.py --workers 1 --soak-seconds 60

`run.py --quick` runs `run(quick=True)`: 1 worker unpinned, one 1 s step at 250/s, 1 s at half
of it and a 1 s soak, without waiting for a quiet machine (a smoke, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from quiet import CpuTimes, others_share, wait_quiet
from report import Row, render, write_json
from server import FIXTURES, LOAD_CPU, SERVER_CPU, free_port, serve, tail, wait_for_ca, wait_ready

__all__ = ["MIX", "main", "run"]

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "load.json"

P99_LIMIT_MS = 10.0
START_RATE = 250.0
STEP_FACTOR = 1.25
BISECTIONS = 2
STEP_SECONDS, STEP_WARMUP = 10.0, 2.0
HALF_SECONDS = 30.0
SOAK_SECONDS = 600.0
RSS_EVERY = 5.0
CONNECTIONS = 16
MIN_ANSWERED = 0.97  # share of the offered rate a step must answer to hold

# (endpoint, fixture, weight): per 100 objects reviewed, each reviewed on both endpoints.
_OBJECTS = (
    ("pod-create-by-workflow-controller", 30),  # Argo's GPU pods: already priced
    ("pod-create-generatename", 20),  # a Job's GPU pod: already priced
    ("pod-create-gpu", 10),  # 8 × H100 by a person: over the threshold, denied
    ("pod-create-warn", 8),  # priced with a warning, admitted, deadline injected
    ("pod-create-sidecar-init", 4),
    ("pod-create-deny", 5),  # missing labels
    ("job-create-gpu", 8),
    ("workflow-create-gpu-dag", 6),
    ("workflow-create-withitems", 4),
    ("cronworkflow-create", 2),
    ("pod-update-label", 2),
    ("workflow-update-label", 1),
)
MIX = tuple(
    (f"/{endpoint}", f"{endpoint}-{name}.json", weight)
    for name, weight in _OBJECTS
    for endpoint in ("mutate", "validate")
)


@dataclass(slots=True)
class Config:
    workers: int
    server_cpus: str | None  # None: the server is not pinned
    load_cpus: str | None  # None: the generator is not pinned


def _config(workers: int, pin: bool = True) -> Config:
    if not pin:
        return Config(workers, None, None)
    if workers == 1:
        return Config(1, str(SERVER_CPU), str(LOAD_CPU))
    return Config(workers, f"{SERVER_CPU},{LOAD_CPU}", None)


@dataclass(frozen=True, slots=True)
class Plan:
    """How long each part runs: the full benchmark, or the quick smoke."""

    step_seconds: float = STEP_SECONDS
    step_warmup: float = STEP_WARMUP
    max_steps: int | None = None  # None: until a step fails
    bisections: int = BISECTIONS
    half_seconds: float = HALF_SECONDS
    rss_every: float = RSS_EVERY
    pin: bool = True  # taskset: server and generator on their CPUs
    patient: bool = True  # wait for a quiet machine before each step


FULL = Plan()
QUICK = Plan(
    step_seconds=1.0,
    step_warmup=0.5,
    max_steps=1,
    bisections=0,
    half_seconds=1.0,
    rss_every=0.25,
    pin=False,
    patient=False,
)
QUICK_SOAK_SECONDS = 1.0


@dataclass(slots=True)
class Step:
    rate: float
    result: dict[str, float | int]
    others_cpu: float
    server_cpu: float  # share of one CPU the server's processes used
    load_cpu: float  # share of one CPU the load generator used

    @property
    def held(self) -> bool:
        r = self.result
        return (
            r["errors"] == 0
            and r["unanswered"] == 0
            and float(r["p99_ms"]) <= P99_LIMIT_MS
            and float(r["achieved_rate"]) >= MIN_ANSWERED * self.rate
        )

    def describe(self) -> str:
        r = self.result
        text = (
            f"{self.rate:,.0f}/s: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"p99.9 {r['p999_ms']:.2f} ms, answered {r['achieved_rate']:,.0f}/s, "
            f"send lag p99 {r['send_lag_p99_ms']:.2f} ms; CPU: server {self.server_cpu:.0%}, "
            f"load generator {self.load_cpu:.0%}"
        )
        if r["errors"] or r["unanswered"]:
            text += f", {r['errors']} errors, {r['unanswered']} unanswered"
        return text


@dataclass(slots=True)
class Memory:
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, bytes)


def tree_rss(pid: int) -> int:
    """Resident memory of `pid` and all its descendants (uvicorn's workers), in bytes."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text(encoding="ascii")
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue  # exited meanwhile
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        for task in tasks:
            try:
                pending += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far."""
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        except OSError:
            continue
        utime, stime = stat.rpartition(")")[2].split()[11:13]
        total += (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")
    return total


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_pids(pid: int) -> list[int]:
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


@contextmanager
def _sampling(pid: int, every: float) -> Iterator[Memory]:
    memory = Memory()
    stop = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        while True:
            memory.samples.append((time.monotonic() - start, tree_rss(pid)))
            if stop.wait(every):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield memory
    finally:
        stop.set()
        thread.join()
        memory.samples.append((time.monotonic() - start, tree_rss(pid)))


def _offer(
    port: int, mix: Path, ca: Path, config: Config, rate: float, seconds: float, warmup: float
) -> dict[str, float | int]:
    """bench/openloop.py offering the mix at `rate` for warmup + seconds."""
    command = [sys.executable, str(BENCH / "openloop.py"), "--port", str(port)]
    command += ["--mix", str(mix), "--unique-uids", "--cafile", str(ca)]
    command += ["--rate", f"{rate:.0f}", "--seconds", str(seconds), "--warmup", str(warmup)]
    command += ["--connections", str(CONNECTIONS)]
    if config.load_cpus is not None:
        command = ["taskset", "-c", config.load_cpus, *command]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + warmup + 120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openloop.py failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, float | int] = json.loads(done.stdout)
    return result


def _check_mix(client: httpx.Client) -> None:
    """One request of each kind in the mix: HTTP 200, an AdmissionReview with its uid."""
    for path, fixture, _ in MIX:
        body = (FIXTURES / fixture).read_bytes()
        uid = json.loads(body)["request"]["uid"]
        answer = client.post(path, content=body, headers={"Content-Type": "application/json"})
        try:
            good = answer.status_code == 200 and answer.json()["response"]["uid"] == uid
        except (ValueError, KeyError, TypeError):
            good = False
        if not good:
            raise RuntimeError(
                f"POST {path} {fixture}: HTTP {answer.status_code} {answer.text[:300]}"
            )


def _ramp(
    measure: Callable[[float], Step], log: Callable[[str], None], plan: Plan = FULL
) -> list[Step]:
    """Rising rates until one fails (or `plan.max_steps` ran), then bisection: every step, in
    the order run."""
    steps: list[Step] = []
    rate = START_RATE
    while True:
        step = measure(rate)
        steps.append(step)
        log(f"  {'held' if step.held else 'FAILED'} {step.describe()}")
        if not step.held or (plan.max_steps is not None and len(steps) >= plan.max_steps):
            break
        rate = round(rate * STEP_FACTOR / 10) * 10
    held = [s.rate for s in steps if s.held]
    if not held or steps[-1].held:
        return steps
    low, high = max(held), steps[-1].rate
    for _ in range(plan.bisections):
        middle = round((low + high) / 2 / 10) * 10
        if middle in (low, high):
            break
        step = measure(middle)
        steps.append(step)
        log(f"  {'held' if step.held else 'FAILED'} {step.describe()}")
        low, high = (middle, high) if step.held else (low, middle)
    return steps


def _run_workers(
    workers: int,
    soak_seconds: float,
    log: Callable[[str], None],
    directory: Path,
    plan: Plan = FULL,
) -> list[Row]:
    config = _config(workers, plan.pin)
    port = free_port()
    cert_dir = directory / f"certs-{workers}"
    ca = cert_dir / "ca.crt"
    server_log = directory / f"server-{workers}.log"
    mix = directory / "mix.json"
    mix.write_text(
        json.dumps([{"path": p, "body": str(FIXTURES / f), "weight": w} for p, f, w in MIX])
    )
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    rows: list[Row] = []
    where = "unpinned" if config.server_cpus is None else f"on CPUs {config.server_cpus}"
    log(f"load: costgate serve --workers {workers} {where}, port {port}")
    with serve(port, cert_dir, server_log, config.server_cpus, workers) as process:
        wait_for_ca(ca, process, server_log)
        context = ssl.create_default_context(cafile=str(ca))
        base = f"https://127.0.0.1:{port}"
        with httpx.Client(base_url=base, verify=context, timeout=5) as client:
            wait_ready(client, process, server_log)
            _check_mix(client)
        log(f"load: every request of the mix answered ({len(MIX)} kinds)")
        live = tree_pids(process.pid)

        def measure(rate: float, seconds: float = plan.step_seconds) -> Step:
            if plan.patient:
                wait_quiet(log, live)
            before = CpuTimes.now(live)
            server_before, load_before = cpu_seconds(live), _children_seconds()
            started = time.monotonic()
            result = _offer(port, mix, ca, config, rate, seconds, plan.step_warmup)
            elapsed = time.monotonic() - started
            return Step(
                rate,
                result,
                others_share(before, CpuTimes.now(live)),
                (cpu_seconds(live) - server_before) / elapsed,
                (_children_seconds() - load_before) / elapsed,
            )

        log(f"load: ramp from {START_RATE:.0f}/s, ×{STEP_FACTOR} until p99 > {P99_LIMIT_MS} ms")
        steps = _ramp(measure, log, plan)
        held = [s for s in steps if s.held]
        if not held and plan.max_steps is None:
            raise RuntimeError(f"{label}: not even {START_RATE:.0f}/s held:\n{tail(server_log)}")
        # The quick run's one step stands for the sustained rate whether it held or not.
        sustained = max(held or steps, key=lambda s: s.rate)
        failed = [s for s in steps if not s.held]
        first_failed = min(failed, key=lambda s: s.rate) if failed else None
        beyond = (
            f"at {first_failed.rate:,.0f}/s: p99 {first_failed.result['p99_ms']:.1f} ms"
            if first_failed is not None
            else f"no faster step: {len(steps)} run"
        )
        rows.append(
            Row(
                "load",
                f"load {label}: sustained rate (p99 ≤ {P99_LIMIT_MS:g} ms)",
                f"{sustained.rate:,.0f}/s, CPU server {sustained.server_cpu:.0%} / load "
                f"{sustained.load_cpu:.0%} ({beyond})",
                others_cpu=max(s.others_cpu for s in steps),
                data={
                    "sustained_rate": sustained.rate,
                    "server_cpu": round(sustained.server_cpu, 2),
                    "load_cpu": round(sustained.load_cpu, 2),
                    "steps": json.dumps([_step_data(s) for s in steps]),
                },
            )
        )
        half = sustained.rate / 2
        log(f"load: {half:,.0f}/s for {plan.half_seconds:g} s (50% of the sustained rate)")
        step = measure(half, plan.half_seconds)
        log(f"  {step.describe()}")
        rows.append(
            Row(
                "load",
                f"load {label}: 50% of sustained, {half:,.0f}/s for {plan.half_seconds:g} s",
                f"p50 {step.result['p50_ms']:.2f} ms, p99 {step.result['p99_ms']:.2f} ms, "
                f"p99.9 {step.result['p999_ms']:.2f} ms",
                f"p99 ≤ {P99_LIMIT_MS:g} ms",
                float(step.result["p99_ms"]) <= P99_LIMIT_MS,
                others_cpu=step.others_cpu,
                ok=step.result["errors"] == 0 and step.result["unanswered"] == 0,
                data=dict(step.result),
            )
        )
        if soak_seconds > 0:
            log(f"soak: {half:,.0f}/s for {soak_seconds:g} s, RSS every {plan.rss_every:g} s")
            with _sampling(process.pid, plan.rss_every) as memory:
                soak = measure(half, soak_seconds)
            rows.append(_soak_row(label, half, soak_seconds, soak, memory))
            log(f"  {rows[-1].result}")
        if process.poll() is not None:
            raise RuntimeError(f"costgate serve died under load:\n{tail(server_log)}")
    return rows


def _step_data(step: Step) -> dict[str, float | int]:
    cpu = {"server_cpu": step.server_cpu, "load_cpu": step.load_cpu, "others_cpu": step.others_cpu}
    return {**step.result, **{k: round(v, 3) for k, v in cpu.items()}}


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _soak_row(label: str, rate: float, seconds: float, soak: Step, memory: Memory) -> Row:
    mib = [rss / 2**20 for _, rss in memory.samples]
    start, end, peak = mib[0], mib[-1], max(mib)
    # Growth over the second half, per minute: a leak keeps climbing; caches settle.
    half_way = [m for (t, _), m in zip(memory.samples, mib, strict=True) if t >= seconds / 2]
    minutes = (memory.samples[-1][0] - seconds / 2) / 60
    slope = (half_way[-1] - half_way[0]) / minutes if len(half_way) > 1 and minutes > 0 else 0.0
    r = soak.result
    ok = r["errors"] == 0 and r["unanswered"] == 0
    return Row(
        "load",
        f"soak {label}: {rate:,.0f}/s for {_duration(seconds)}",
        f"{r['measured']:,} answered, {r['errors']} errors, {r['unanswered']} unanswered; "
        f"p99 {r['p99_ms']:.2f} ms; RSS {start:.1f} → {end:.1f} MiB (peak {peak:.1f}, "
        f"{slope:+.2f} MiB/min over the second half)",
        "no error",
        ok,
        others_cpu=soak.others_cpu,
        ok=ok,
        data={
            **r,
            "rss_start_mib": round(start, 1),
            "rss_end_mib": round(end, 1),
            "rss_peak_mib": round(peak, 1),
            "rss_second_half_mib_per_min": round(slope, 3),
            "rss_samples": json.dumps([(round(t, 1), rss) for t, rss in memory.samples]),
        },
    )


def run(
    workers: tuple[int, ...] = (1, 2),
    soak_seconds: float = SOAK_SECONDS,
    soak_workers: tuple[int, ...] = (1,),
    log: Callable[[str], None] = print,
    quick: bool = False,
) -> list[Row]:
    """The load rows. `quick`: 1 worker, the QUICK plan, whatever the other arguments say."""
    plan = FULL
    if quick:
        plan, workers, soak_seconds, soak_workers = QUICK, (1,), QUICK_SOAK_SECONDS, (1,)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="costgate-load-") as tmp:
        for count in workers:
            soak = soak_seconds if count in soak_workers else 0.0
            try:
                rows += _run_workers(count, soak, log, Path(tmp), plan)
            except RuntimeError as exc:  # the other worker counts still run
                log(f"load: {count} worker(s) failed: {exc}")
                rows.append(Row("load", f"load {count} worker(s)", str(exc)[:200], ok=False))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--soak-seconds", type=float, default=SOAK_SECONDS)
    parser.add_argument("--soak-workers", type=int, nargs="*", default=[1])
    parser.add_argument("--quick", action="store_true", help="a smoke: seconds, nothing written")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2 and not args.quick:
        print("load benchmark needs two CPUs", file=sys.stderr)
        return 1

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    workers, soak_workers = tuple(args.workers), tuple(args.soak_workers)
    rows = run(workers, args.soak_seconds, soak_workers, log, args.quick)
    print(render(rows))
    if not args.quick:
        write_json(rows, RESULTS)
        print(f"written to {RESULTS.relative_to(BENCH.parent)}")
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
