"""The real `costgate serve` process under load. Owns the "server" rows of the table.

One worker pinned to CPU 0 (`taskset -c 0`), the load generator pinned to CPU 1, TLS with
keep-alive, 16 connections, bodies = the captured AdmissionReviews. COSTGATE_NOOP_ENDPOINT=1
adds POST /noop (reads the body, answers a constant review): the same server doing none of
costgate's work, so each endpoint's requests/s is also shown as a ratio to /noop.

1. Start the server, wait for GET /healthz (verified against DIR/ca.crt), and check that one
   request to each endpoint returns the expected AdmissionReview.
2. Closed loop, `wrk -t1 -c16 -d10s --latency`: requests/s and latency p50/p99 for /noop,
   /validate (GPU pod), /validate (plain pod), /mutate (GPU pod), in that order, same process.
3. Open loop at a fixed rate (bench/openloop.py): p50/p99/p99.9 latency at 2,000 requests/s
   for /noop and /validate (GPU pod).
4. Stop the server, whatever happened.

Each measurement waits for a quiet machine and is repeated when another process took CPU
meanwhile (bench/quiet.py).

Quick (`run.py --quick`, a smoke, not a measurement): the same steps unpinned and without
waiting, wrk for 1 s per endpoint (skipped when wrk is missing) and 1 s at 200 requests/s.

    python bench/server.py    # this part alone
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import httpx
from quiet import once, quietly
from report import Row, render

__all__ = [
    "TARGETS",
    "Target",
    "WrkResult",
    "free_port",
    "missing_prerequisites",
    "pinned",
    "run",
    "serve",
    "tail",
    "wait_for_ca",
    "wait_ready",
]

BENCH = Path(__file__).resolve().parent
FIXTURES = BENCH.parent / "tests" / "fixtures" / "admission"
COSTGATE = Path(sys.executable).parent / "costgate"
SERVER_CPU, LOAD_CPU = 0, 1
CONNECTIONS = 16
WRK_SECONDS = 10
WARMUP_SECONDS = 3
FIXED_RATE = 2_000
FIXED_RATE_SECONDS = 10
P99_TARGET_MS = 5.0
READY_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How the server is measured: the full benchmark, or the quick smoke."""

    server_cpu: str | None = str(SERVER_CPU)  # None: not pinned (no taskset)
    load_cpu: str | None = str(LOAD_CPU)
    wrk: bool = True  # the closed-loop rows
    wrk_seconds: int = WRK_SECONDS
    warmup_seconds: int = WARMUP_SECONDS  # wrk on /validate before the rows; 0: none
    fixed_rate: int = FIXED_RATE
    fixed_rate_seconds: float = FIXED_RATE_SECONDS
    fixed_rate_warmup: float = 2.0
    patient: bool = True  # wait for a quiet machine, measure again when it was not


FULL = Plan()


def quick_plan() -> Plan:
    """`run.py --quick`: unpinned, short, and without the wrk rows when wrk is missing."""
    return Plan(
        server_cpu=None,
        load_cpu=None,
        wrk=shutil.which("wrk") is not None,
        wrk_seconds=1,
        warmup_seconds=0,
        fixed_rate=200,
        fixed_rate_seconds=1.0,
        fixed_rate_warmup=0.5,
        patient=False,
    )


@dataclass(frozen=True, slots=True)
class Target:
    label: str
    path: str
    fixture: str
    allowed: bool  # the expected `response.allowed`
    min_rps: int | None = None  # the throughput target, per worker core


TARGETS = (
    Target("/noop (gpu body)", "/noop", "validate-pod-create-gpu.json", True),
    Target("/validate gpu", "/validate", "validate-pod-create-gpu.json", False, 8_000),
    Target("/validate plain", "/validate", "validate-pod-create-plain.json", True, 12_000),
    Target("/mutate gpu", "/mutate", "mutate-pod-create-gpu.json", True, 8_000),
)
NOOP, VALIDATE_GPU = TARGETS[0], TARGETS[1]


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    handle_us: float | None = None  # mean time in AdmissionService.handle, from /metrics

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.non_2xx == 0 and self.socket_errors == 0


def missing_prerequisites(quick: bool = False) -> str | None:
    """Why the server benchmark cannot run here, or None. The quick run needs only costgate
    (unpinned, and without its wrk rows when wrk is missing)."""
    if not quick:
        if shutil.which("wrk") is None:
            return "wrk is not installed (apt-get install -y wrk)"
        if shutil.which("taskset") is None:
            return "taskset is not installed (util-linux)"
        cpus = os.sched_getaffinity(0)
        if len(cpus) < 2 or not {SERVER_CPU, LOAD_CPU} <= cpus:
            return f"needs CPUs {SERVER_CPU} and {LOAD_CPU}; this process may use {sorted(cpus)}"
    if not COSTGATE.exists():
        return f"{COSTGATE} not found: run `make .venv/.installed`"
    return None


def pinned(cpus: str | None, command: list[str]) -> list[str]:
    """`command` run by `taskset -c cpus`, or as it is when `cpus` is None."""
    return command if cpus is None else ["taskset", "-c", cpus, *command]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    port: int, cert_dir: Path, log: Path, cpus: str | None = str(SERVER_CPU), workers: int = 1
) -> Iterator[subprocess.Popen[bytes]]:
    """`costgate serve` on `cpus` (None: unpinned) with /noop, stopped (SIGTERM, then
    SIGKILL) on exit."""
    env = {**os.environ, "COSTGATE_NOOP_ENDPOINT": "1", "COSTGATE_LOG_LEVEL": "warning"}
    command = pinned(cpus, [str(COSTGATE), "serve", "--workers", str(workers)])
    command += ["--port", str(port), "--cert-dir", str(cert_dir)]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_ca(ca: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    """The server writes its self-signed CA (atomically) before it listens."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not ca.exists():
        if process.poll() is not None:
            raise RuntimeError(f"costgate serve exited with {process.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {ca} after {READY_TIMEOUT:g} s:\n{tail(log)}")
        time.sleep(0.1)


def wait_ready(client: httpx.Client, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"costgate serve exited with {process.returncode}:\n{tail(log)}")
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise RuntimeError(f"costgate serve not ready after {READY_TIMEOUT:g} s:\n{tail(log)}")


def tail(log: Path) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])


def _check_answer(client: httpx.Client, target: Target) -> None:
    """One request to the endpoint: HTTP 200 and the expected AdmissionReview."""
    body = (FIXTURES / target.fixture).read_bytes()
    answer = client.post(target.path, content=body, headers={"Content-Type": "application/json"})
    expected_uid = "" if target is NOOP else json.loads(body)["request"]["uid"]
    try:
        review = answer.json()
        response = review["response"]
        good = (
            answer.status_code == 200
            and review["apiVersion"] == "admission.k8s.io/v1"
            and review["kind"] == "AdmissionReview"
            and response["uid"] == expected_uid
            and response["allowed"] is target.allowed
        )
    except (ValueError, KeyError, TypeError):
        good = False
    if not good:
        raise RuntimeError(
            f"POST {target.path} with {target.fixture}: expected HTTP 200, uid {expected_uid!r}, "
            f"allowed={target.allowed}; got HTTP {answer.status_code}: {answer.text[:300]}"
        )


def _lua(directory: Path, fixture: str) -> Path:
    """A wrk script that POSTs the fixture's bytes as application/json."""
    script = directory / (fixture.removesuffix(".json") + ".lua")
    body = FIXTURES / fixture
    script.write_text(
        f"local file = assert(io.open({json.dumps(str(body))}, 'rb'))\n"
        "wrk.method = 'POST'\n"
        "wrk.body = file:read('*a')\n"
        "file:close()\n"
        "wrk.headers['Content-Type'] = 'application/json'\n",
        encoding="utf-8",
    )
    return script


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)


def _wrk(url: str, script: Path, seconds: int, cpu: str | None = str(LOAD_CPU)) -> WrkResult:
    command = pinned(cpu, ["wrk", "-t1", f"-c{CONNECTIONS}"])
    command += [f"-d{seconds}s", "--latency", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{output}")
    latency = {m[1]: round(float(m[2]) * _UNITS_MS[m[3]], 3) for m in _PERCENTILE.finditer(output)}
    requests = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if requests is None or rps is None or set(latency) != {"50", "99"}:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    result = WrkResult(
        requests=int(requests[1]),
        rps=float(rps[1]),
        p50_ms=latency["50"],
        p99_ms=latency["99"],
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )
    return result


_DURATION = re.compile(
    r'^costgate_admission_duration_seconds_(sum|count)\{endpoint="(\w+)"\} (\S+)$', re.MULTILINE
)


def _admission_totals(client: httpx.Client, endpoint: str) -> tuple[float, float]:
    """(reviews answered, seconds spent in AdmissionService.handle) on `endpoint` so far, from
    the server's own /metrics histogram."""
    totals = {
        kind: float(value)
        for kind, name, value in _DURATION.findall(client.get("/metrics").text)
        if name == endpoint
    }
    return totals.get("count", 0.0), totals.get("sum", 0.0)


def _wrk_with_metrics(
    client: httpx.Client, target: Target, script: Path, plan: Plan = FULL
) -> WrkResult:
    """A wrk run, with the mean time the server spent in AdmissionService.handle meanwhile."""
    url = str(client.base_url.join(target.path))
    if target is NOOP:
        return _wrk(url, script, plan.wrk_seconds, plan.load_cpu)
    endpoint = target.path.strip("/")
    count_before, seconds_before = _admission_totals(client, endpoint)
    result = _wrk(url, script, plan.wrk_seconds, plan.load_cpu)
    count_after, seconds_after = _admission_totals(client, endpoint)
    if count_after <= count_before:
        return result
    handle_us = (seconds_after - seconds_before) / (count_after - count_before) * 1e6
    return replace(result, handle_us=round(handle_us, 1))


def _open_loop(
    port: int, path: str, fixture: str, cafile: Path, plan: Plan = FULL
) -> dict[str, float | int]:
    command = pinned(plan.load_cpu, [sys.executable, str(BENCH / "openloop.py")])
    command += ["--port", str(port), "--path", path, "--body", str(FIXTURES / fixture)]
    command += ["--cafile", str(cafile), "--rate", str(plan.fixed_rate)]
    command += ["--seconds", str(plan.fixed_rate_seconds), "--connections", str(CONNECTIONS)]
    command += ["--warmup", str(plan.fixed_rate_warmup)]
    timeout = plan.fixed_rate_warmup + plan.fixed_rate_seconds + 120
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"openloop.py failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, float | int] = json.loads(done.stdout)
    return result


def _wrk_row(target: Target, result: WrkResult, noop_rps: float, others: float) -> Row:
    text = f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms"
    if result.handle_us is not None:
        text += f", handle() {result.handle_us:.0f} µs"
    if not result.ok:
        text += f" ({result.non_2xx} non-2xx, {result.socket_errors} socket errors)"
    return Row(
        "server",
        f"server wrk -c{CONNECTIONS} {target.label}",
        text,
        f"≥ {target.min_rps:,} req/s" if target.min_rps else "",
        None if target.min_rps is None else result.rps >= target.min_rps,
        round(result.rps / noop_rps, 2) if noop_rps > 0 else None,
        others_cpu=others,
        ok=result.ok,
        data={
            "requests": result.requests,
            "rps": result.rps,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "non_2xx": result.non_2xx,
            "socket_errors": result.socket_errors,
            "handle_us": result.handle_us,
        },
    )


def _open_loop_row(
    target: Target, result: dict[str, float | int], with_target: bool, others: float, rate: int
) -> Row:
    ok = result["errors"] == 0 and result["unanswered"] == 0
    text = (
        f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
        f"p99.9 {result['p999_ms']:.2f} ms"
    )
    if not ok:
        text += f" ({result['errors']} errors, {result['unanswered']} unanswered)"
    return Row(
        "server",
        f"server {rate:,}/s fixed rate {target.label}",
        text,
        f"p99 ≤ {P99_TARGET_MS:g} ms" if with_target else "",
        float(result["p99_ms"]) <= P99_TARGET_MS if with_target else None,
        others_cpu=others,
        ok=ok,
        data=dict(result),
    )


def run(log: Callable[[str], None] = print, quick: bool = False) -> list[Row]:
    """The server rows; raises RuntimeError when the server misbehaves before the load.
    `quick`: see the module docstring."""
    plan = quick_plan() if quick else FULL
    measured = quietly if plan.patient else once
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="costgate-bench-") as tmp:
        directory = Path(tmp)
        cert_dir = directory / "certs"
        ca = cert_dir / "ca.crt"
        server_log = directory / "server.log"
        where = "unpinned" if plan.server_cpu is None else f"on CPU {plan.server_cpu}"
        log(f"server: costgate serve {where}, port {port}")
        with serve(port, cert_dir, server_log, plan.server_cpu) as process:
            wait_for_ca(ca, process, server_log)
            context = ssl.create_default_context(cafile=str(ca))
            with httpx.Client(base_url=base, verify=context, timeout=5) as client:
                wait_ready(client, process, server_log)
                for target in TARGETS:
                    _check_answer(client, target)
                log("server: every endpoint answers as expected")

                live = (process.pid,)  # taskset execs: this is the server's pid
                if plan.wrk:
                    rows += _closed_loop(client, directory, plan, live, log)
                else:
                    log("server: wrk is not installed: no closed-loop (wrk) rows")

            for target, with_target in ((NOOP, False), (VALIDATE_GPU, True)):
                log(
                    f"server: {plan.fixed_rate}/s for {plan.fixed_rate_seconds:g} s "
                    f"on {target.label}"
                )
                measure = partial(_open_loop, port, target.path, target.fixture, ca, plan)
                fixed, others = measured(measure, log, live)
                rows.append(_open_loop_row(target, fixed, with_target, others, plan.fixed_rate))
            if process.poll() is not None:
                raise RuntimeError(f"costgate serve died under load:\n{tail(server_log)}")
    return rows


def _closed_loop(
    client: httpx.Client,
    directory: Path,
    plan: Plan,
    live: tuple[int, ...],
    log: Callable[[str], None],
) -> list[Row]:
    """The wrk rows, /noop first (the others' ratio is to it)."""
    measured = quietly if plan.patient else once
    base = str(client.base_url).rstrip("/")
    scripts = {t.fixture: _lua(directory, t.fixture) for t in TARGETS}
    if plan.warmup_seconds:
        log(f"server: warm-up, wrk {plan.warmup_seconds} s on {VALIDATE_GPU.label}")
        script = scripts[VALIDATE_GPU.fixture]
        _wrk(base + VALIDATE_GPU.path, script, plan.warmup_seconds, plan.load_cpu)
    rows: list[Row] = []
    noop_rps = 0.0
    for target in TARGETS:
        log(f"server: wrk -c{CONNECTIONS} -d{plan.wrk_seconds}s {target.label}")
        script = scripts[target.fixture]
        result, others = measured(
            partial(_wrk_with_metrics, client, target, script, plan), log, live
        )
        if target is NOOP:
            noop_rps = result.rps
        rows.append(_wrk_row(target, result, noop_rps, others))
    return rows


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    reason = missing_prerequisites(quick)
    if reason:
        print(f"server benchmark skipped: {reason}", file=sys.stderr)
        sys.exit(0)
    print(render(run(lambda line: print(line, file=sys.stderr), quick)))
