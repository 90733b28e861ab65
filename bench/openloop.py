"""Fixed-rate (open-loop) HTTPS load generator: wrk cannot hold a rate and wrk2 is not
packaged, so this owns the "p99 at N requests/s" measurement.

Request i is due at start + i / rate, whatever happened to the requests before it. Each of
CONNECTIONS threads owns one keep-alive TLS connection (blocking socket, verified against the
server's CA), takes the next due request, sleeps until it is due, sends it and reads the whole
answer. Latency is measured from the time the request was DUE, not from when it was sent: when
every connection is busy the next request goes out late and that wait counts, so a stall of
the server shows in the percentiles instead of being hidden by fewer requests (coordinated
omission). The send lag (sent - due) is reported too, to show the generator kept up.

A mix (bench/load.py) offers several requests in fixed proportions: a weighted schedule of
them, shuffled with a fixed seed, is walked in turn. With `--unique-uids` every request carries
a fresh `request.uid` (as the API server sends) and an answer counts as right only when it is
HTTP 200 and carries that uid back.

Run by bench/server.py and bench/load.py pinned to its own CPU (`taskset -c 1`); prints one
JSON object:

    python bench/openloop.py --port 8443 --path /validate --body FILE --cafile CA --rate 2000
    python bench/openloop.py --port 8443 --mix MIX.json --unique-uids --cafile CA --rate 800

MIX.json: `[{"path": "/validate", "body": "FILE", "weight": 25}, ...]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path

from report import percentile

__all__ = ["Request", "Sample", "main", "run"]

SCHEDULE_SEED = 7


@dataclass(frozen=True, slots=True)
class Sample:
    due: float  # perf_counter seconds
    sent: float
    done: float
    ok: bool  # HTTP 200 with a complete body (carrying the request's uid, with unique uids)


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    body: bytes
    weight: int = 1


class _Message:
    """One request's HTTP bytes, split around its AdmissionReview uid when each request must
    carry a fresh one."""

    def __init__(self, host: str, port: int, request: Request, unique_uids: bool) -> None:
        head = (
            f"POST {request.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(request.body)}\r\n\r\n"
        ).encode("ascii")
        uid = _uid_of(request.body) if unique_uids else None
        if uid is None:
            self.parts = [head + request.body]
        else:
            self.parts = (head + request.body).split(uid.encode())

    def render(self, serial: int) -> tuple[bytes, bytes | None]:
        """(the bytes to send, the uid the answer must carry or None)."""
        if len(self.parts) == 1:
            return self.parts[0], None
        uid = f"00000000-0000-4000-8000-{serial:012d}".encode()  # as long as a real uid
        return uid.join(self.parts), uid


def _uid_of(body: bytes) -> str | None:
    try:
        uid = json.loads(body)["request"]["uid"]
    except (ValueError, KeyError, TypeError):
        return None
    return uid if isinstance(uid, str) and len(uid) == 36 else None


def schedule(requests: list[Request], seed: int = SCHEDULE_SEED) -> list[int]:
    """Indexes into `requests`, each as often as its weight, in a fixed shuffled order."""
    order = [i for i, request in enumerate(requests) for _ in range(request.weight)]
    random.Random(seed).shuffle(order)
    return order


class _Connection:
    """One keep-alive HTTPS connection."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self.host, self.port, self.context = host, port, context
        self.sock: ssl.SSLSocket | None = None
        self.stream: BufferedReader | None = None

    def connect(self) -> tuple[ssl.SSLSocket, BufferedReader]:
        raw = socket.create_connection((self.host, self.port), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self.context.wrap_socket(raw, server_hostname=self.host)
        self.stream = self.sock.makefile("rb")
        return self.sock, self.stream

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = self.stream = None

    def exchange(self, request: bytes, uid: bytes | None) -> bool:
        """Send the request and read the whole answer: True for HTTP 200 (carrying `uid` when
        given). Any failure closes the connection; the next exchange opens a new one."""
        try:
            if self.sock is None or self.stream is None:
                sock, stream = self.connect()
            else:
                sock, stream = self.sock, self.stream
            sock.sendall(request)
            status = stream.readline().split(b" ", 2)[1:2]
            length = -1
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if status == [b"200"] and length >= 0:
                answer = stream.read(length)
                if len(answer) == length:
                    return uid is None or b'"uid":"' + uid + b'"' in answer
        except (OSError, ValueError):
            pass
        self.close()
        return False


def _worker(
    connection: _Connection,
    messages: list[_Message],
    order: list[int],
    due_times: itertools.count[int],
    start: float,
    interval: float,
    total: int,
    samples: list[Sample],
) -> None:
    while True:
        i = next(due_times)  # itertools.count is atomic under the GIL
        if i >= total:
            return
        request, uid = messages[order[i % len(order)]].render(i)
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent = time.perf_counter()
        ok = connection.exchange(request, uid)
        samples.append(Sample(due, sent, time.perf_counter(), ok))  # list.append is atomic


def run(
    *,
    host: str,
    port: int,
    requests: list[Request],
    cafile: Path,
    rate: float,
    seconds: float,
    warmup: float,
    connections: int,
    unique_uids: bool = False,
) -> dict[str, float | int]:
    """Offer `rate` requests/s for warmup + seconds; statistics over the last `seconds`."""
    context = ssl.create_default_context(cafile=str(cafile))
    messages = [_Message(host, port, request, unique_uids) for request in requests]
    order = schedule(requests)
    pool = [_Connection(host, port, context) for _ in range(connections)]
    for connection in pool:
        connection.connect()
    interval = 1.0 / rate
    total = round((warmup + seconds) * rate)
    samples: list[Sample] = []
    due_times = itertools.count()
    start = time.perf_counter() + 0.05
    threads = [
        threading.Thread(
            target=_worker,
            args=(connection, messages, order, due_times, start, interval, total, samples),
            daemon=True,
        )
        for connection in pool
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + warmup + seconds + 30  # a stalled server cannot hang us
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for connection in pool:
        connection.close()

    # The first request measured is the first due at or after the warm-up; its due time is
    # computed as the workers compute theirs, so the comparison is exact (warmup * rate need
    # not be a whole number).
    first = math.ceil(round(warmup * rate, 6))
    measured_from = start + first * interval
    measured = [s for s in samples if s.due >= measured_from]
    latencies = sorted((s.done - s.due) * 1000 for s in measured)
    service = sorted((s.done - s.sent) * 1000 for s in measured)
    lags = sorted((s.sent - s.due) * 1000 for s in measured)
    span = max((s.done for s in measured), default=start) - (start + warmup)
    expected = total - first
    return {
        "rate": rate,
        "connections": connections,
        "expected": expected,
        "measured": len(measured),
        "unanswered": expected - len(measured),
        "errors": sum(not s.ok for s in measured),
        "achieved_rate": round(len(measured) / span, 1) if span > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "p999_ms": round(percentile(latencies, 0.999), 3),
        "max_ms": round(latencies[-1], 3) if latencies else float("nan"),
        "service_p99_ms": round(percentile(service, 0.99), 3),
        "send_lag_p50_ms": round(percentile(lags, 0.50), 3),
        "send_lag_p99_ms": round(percentile(lags, 0.99), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", help="with --body: offer this one request")
    parser.add_argument("--body", type=Path)
    parser.add_argument("--mix", type=Path, help="JSON list of {path, body, weight}")
    parser.add_argument("--unique-uids", action="store_true")
    parser.add_argument("--cafile", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if args.mix is not None:
        entries = json.loads(args.mix.read_text(encoding="utf-8"))
        requests = [
            Request(e["path"], Path(e["body"]).read_bytes(), int(e["weight"])) for e in entries
        ]
    elif args.path and args.body:
        requests = [Request(args.path, args.body.read_bytes())]
    else:
        parser.error("give --mix, or --path and --body")
    result = run(
        host=args.host,
        port=args.port,
        requests=requests,
        cafile=args.cafile,
        rate=args.rate,
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        unique_uids=args.unique_uids,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
