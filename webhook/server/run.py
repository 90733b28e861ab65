"""Run the application under uvicorn over TLS, one or several worker processes."""

from __future__ import annotations

import ssl
from pathlib import Path
from types import FrameType

import uvicorn
from uvicorn.supervisors import Multiprocess, multiprocess

from ..reload import Reloader
from ..settings import Settings
from .app import DRAINING

__all__ = ["serve"]


class _TLSConfig(uvicorn.Config):
    """uvicorn's Config with TLS 1.2 as the floor (uvicorn leaves the OpenSSL default).
    A module-level class, so worker processes can unpickle it."""

    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
            self._watch_certificate(self.ssl)

    def _watch_certificate(self, context: ssl.SSLContext) -> None:
        """Rotation without restart: when cert-manager (or `costgate certs`) renews the
        Secret, the files change and the context takes the new pair; handshakes from then
        on present it. A half-written or mismatched pair is refused and the old one kept."""
        certfile, keyfile = str(self.ssl_certfile), str(self.ssl_keyfile)
        self._certificates = Reloader(
            "tls",
            [Path(certfile), Path(keyfile)],
            lambda: context.load_cert_chain(certfile, keyfile),
            interval=float(self.reload_interval),
        ).start()

    reload_interval: float = 2.0


class _Server(uvicorn.Server):
    """uvicorn's server, with readiness dropped as soon as the stop signal arrives; uvicorn
    then stops accepting and waits for the reviews in flight (timeout_graceful_shutdown)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        DRAINING.set()
        super().handle_exit(sig, frame)


# With --workers > 1 each worker runs the server that uvicorn's multiprocess module builds by
# this name: make it ours, so that SIGTERM drops readiness in every worker too. Workers import
# this module (to unpickle _TLSConfig), so the name is set in them as well.
multiprocess.Server = _Server  # type: ignore[attr-defined]  # imported there, not exported


def serve(settings: Settings, *, certfile: str, keyfile: str) -> None:
    """Serve until SIGINT/SIGTERM. Workers build the app from COSTGATE_* settings."""
    config = _TLSConfig(
        "webhook.server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # the API server calls us directly; no proxy to trust
        timeout_graceful_shutdown=10,
    )
    config.reload_interval = settings.reload_interval
    server = _Server(config)
    if settings.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        server.run()
