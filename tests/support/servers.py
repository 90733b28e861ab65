"""Real `costgate serve` processes over TLS: start one on a free port with its own certificate
folder, wait until it answers /healthz, stop it."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.config import env_without_costgate

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(port: int, cert_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "webhook.cli",
        "serve",
        "--port",
        str(port),
        "--cert-dir",
        str(cert_dir),
        *extra,
    ]


@dataclass
class Server:
    base_url: str
    port: int
    ca: Path
    log: Path
    process: subprocess.Popen[bytes]

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=self.tls_context(), timeout=10.0)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"costgate serve exited with {server.process.returncode}:\n"
                + server.log.read_text(errors="replace")
            )
        if server.ca.exists():
            try:
                with server.client() as client:
                    if client.get("/healthz").status_code == 200:
                        return
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    pytest.fail("costgate serve did not answer /healthz in time:\n" + server.log.read_text())


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_server(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    """`costgate serve *extra` in `tmp_path` (certificates in tmp_path/certs, log in
    tmp_path/server.log) on the defaults plus `env`, answering /healthz."""
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            serve_command(port, tmp_path / "certs", *extra),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**env_without_costgate(), **(env or {})},
            cwd=tmp_path,
        )
    server = Server(f"https://127.0.0.1:{port}", port, tmp_path / "certs" / "ca.crt", log, process)
    wait_ready(server)
    return server
