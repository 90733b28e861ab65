"""Fixed-rate (open-loop) HTTPS load generator: wrk cannot hold a rate and wrk2 is not
packaged, so this owns the "p99 at N requests/s" measurement.

Request i is due at start + i / rate, whatever happened to the requests before it. Each of
CONNECTIONS threads owns one keep-alive TLS connection (blocking socket, verified against the
server's CA), takes the next due request, sleeps until it is due, sends it and reads the whole
answer. Latency is measured from the time the request was DUE, not from when it was sent: when
every connection is busy the next request goes out late and that wait counts, so a stall of
the server shows in the percentiles instead of being hidden by fewer requests (coordinated
omission). The send lag (sent - due) is reported too, to show the generator kept up.

Run by bench/server.py pinned to its own CPU (`taskset -c 1`); prints one JSON object:

    python bench/openloop.py --port 8443 --path /validate --body FILE --cafile CA --rate 2000
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path

from report import percentile

__all__ = ["Sample", "main"]


@dataclass(frozen=True, slots=True)
class Sample:
    due: float  # perf_counter seconds
    sent: float
    done: float
    ok: bool  # HTTP 200 with a complete body


class _Connection:
    """One keep-alive HTTPS connection sending the same request again and again."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, request: bytes) -> None:
        self.host, self.port, self.context, self.request = host, port, context, request
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

    def exchange(self) -> bool:
        """Send the request and read the whole answer: True for HTTP 200. Any failure closes
        the connection; the next exchange opens a new one."""
        try:
            if self.sock is None or self.stream is None:
                sock, stream = self.connect()
            else:
                sock, stream = self.sock, self.stream
            sock.sendall(self.request)
            status = stream.readline().split(b" ", 2)[1:2]
            length = -1
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if status == [b"200"] and length >= 0 and len(stream.read(length)) == length:
                return True
        except (OSError, ValueError):
            pass
        self.close()
        return False


def _worker(
    connection: _Connection,
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
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent = time.perf_counter()
        ok = connection.exchange()
        samples.append(Sample(due, sent, time.perf_counter(), ok))  # list.append is atomic


def run(
    *,
    host: str,
    port: int,
    path: str,
    body: bytes,
    cafile: Path,
    rate: float,
    seconds: float,
    warmup: float,
    connections: int,
) -> dict[str, float | int]:
    """Offer `rate` requests/s for warmup + seconds; statistics over the last `seconds`."""
    context = ssl.create_default_context(cafile=str(cafile))
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("ascii") + body
    pool = [_Connection(host, port, context, request) for _ in range(connections)]
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
            args=(connection, due_times, start, interval, total, samples),
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

    measured = [s for s in samples if s.due >= start + warmup]
    latencies = sorted((s.done - s.due) * 1000 for s in measured)
    service = sorted((s.done - s.sent) * 1000 for s in measured)
    lags = sorted((s.sent - s.due) * 1000 for s in measured)
    span = max((s.done for s in measured), default=start) - (start + warmup)
    expected = total - round(warmup * rate)
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
    parser.add_argument("--path", required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--cafile", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    result = run(
        host=args.host,
        port=args.port,
        path=args.path,
        body=args.body.read_bytes(),
        cafile=args.cafile,
        rate=args.rate,
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
