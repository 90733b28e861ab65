"""Run the application under uvicorn over TLS, one or several worker processes."""

from __future__ import annotations

import ssl

import uvicorn
from uvicorn.supervisors import Multiprocess

from ..settings import Settings

__all__ = ["serve"]


class _TLSConfig(uvicorn.Config):
    """uvicorn's Config with TLS 1.2 as the floor (uvicorn leaves the OpenSSL default).
    A module-level class, so worker processes can unpickle it."""

    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2


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
    server = uvicorn.Server(config)
    if settings.workers > 1:
        Multiprocess(config, target=server.run, sockets=[config.bind_socket()]).run()
    else:
        server.run()
