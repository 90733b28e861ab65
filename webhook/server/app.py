"""The ASGI application: admission endpoints on a bare ASGI path, the rest on FastAPI.

`/mutate` and `/validate` are served by `AdmissionEndpoints` before FastAPI sees the request:
every Pod creation in the cluster waits on them, and FastAPI's per-request machinery
(routing, dependency injection, response models) would cost more than the decision itself.
Health, readiness, metrics and status are ordinary FastAPI routes; /status (every team's
usage and budgets) and /metrics (dollars admitted per namespace and owner) answer only the
callers a `StatusAccess` lets through.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from ..access import (
    METRICS,
    KubernetesAccess,
    LoopbackOnly,
    Refusal,
    StatusAccess,
    Target,
    status_of,
)
from ..admission import ReviewError, recover_uid
from ..approvals import Keyring
from ..core.config import Config
from ..reload import Reloader
from ..service import AdmissionService, Answer, Endpoint
from ..settings import Settings
from ..state import State, memory_state
from ..state.cluster import cluster_state, load_api_client
from ..state.report import usage_report
from ..tables import load_config
from .metrics import Metrics

__all__ = ["DRAINING", "AdmissionEndpoints", "build_app", "create_app"]

# Set when the process is told to stop: /readyz answers 503 from then on, so the endpoint
# goes out of the Service while the reviews in flight finish.
DRAINING = threading.Event()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ENDPOINTS: dict[str, Endpoint] = {"/mutate": "mutate", "/validate": "validate"}
_NOOP_REVIEW = (
    b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",'
    b'"response":{"uid":"","allowed":true}}'
)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_body(receive: Receive, limit: int, declared: int | None) -> tuple[bytes, bool]:
    """The request body, or its first chunks and True when it is larger than `limit`.
    A declared Content-Length over the limit stops reading at the first chunk."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit or (declared is not None and declared > limit):
            return b"".join(chunks), True
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks), False


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    close: bool = False,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend(extra)
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AdmissionEndpoints:
    """ASGI app serving POST /mutate and /validate itself and passing the rest to `fallback`."""

    def __init__(
        self,
        service: AdmissionService,
        fallback: ASGIApp,
        *,
        max_body_bytes: int,
        noop_endpoint: bool = False,
    ) -> None:
        self.service = service
        self.fallback = fallback
        self.max_body_bytes = max_body_bytes
        self.noop_endpoint = noop_endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        endpoint = _ENDPOINTS.get(path) if path else None
        if endpoint is None:
            if path == "/noop" and self.noop_endpoint:
                await _read_body(receive, self.max_body_bytes, _content_length(scope))
                await _respond(send, 200, _NOOP_REVIEW)
                return
            await self.fallback(scope, receive, send)
            return
        if scope["method"] != "POST":
            body = b'{"error":"admission endpoints take POST"}'
            await _respond(send, 405, body, extra=((b"allow", b"POST"),))
            return
        body, too_large = await _read_body(receive, self.max_body_bytes, _content_length(scope))
        if too_large:
            limit_mib = self.max_body_bytes / (1024 * 1024)
            error = ReviewError(
                f"the body is larger than {limit_mib:g} MiB", recover_uid(body), status=413
            )
            answer: Answer = self.service.refuse(error, endpoint)
            await _respond(send, answer.status, answer.body, close=True)
            return
        answer = await self.service.handle_async(body, endpoint)
        await _respond(send, answer.status, answer.body)


def _check(access: StatusAccess, request: Request, target: Target) -> Refusal | None:
    return access.check(
        authorization=request.headers.get("authorization"),
        peer=request.client.host if request.client is not None else None,
        target=target,
    )


def build_app(
    config: Config | Callable[[], Config],
    *,
    max_body_bytes: int,
    metrics: Metrics | None = None,
    noop_endpoint: bool = False,
    state: State | None = None,
    status_access: StatusAccess | None = None,
) -> AdmissionEndpoints:
    """The whole application for a loaded Config (or a function returning the current one).
    /status and /metrics answer whom `status_access` lets through (default: callers on this
    host)."""
    metrics = metrics or Metrics()
    access = status_access or LoopbackOnly()
    current = config if callable(config) else (lambda: config)
    service = AdmissionService(current, observer=metrics, state=state)
    api = FastAPI(title="costgate", docs_url=None, redoc_url=None, openapi_url=None)

    @api.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @api.get("/readyz", response_class=PlainTextResponse)
    def readyz() -> Response:
        if DRAINING.is_set():
            return PlainTextResponse("not ready: shutting down", status_code=503)
        if state is not None and not state.ready():
            detail = state.cluster.sync_state() if state.cluster is not None else {}
            text = ", ".join(f"{k} {v}" for k, v in detail.items())
            return PlainTextResponse(f"not ready: cluster state {text}", status_code=503)
        return PlainTextResponse("ok")

    @api.get("/status")
    def status(request: Request, namespace: str | None = None) -> Response:
        """Usage against quotas and budgets, as `costgate status --server` shows it."""
        refusal = _check(access, request, status_of(namespace))
        if refusal is not None:
            body = orjson.dumps({"error": refusal.reason})
            return Response(body, refusal.status, refusal.headers, "application/json")
        if state is None:
            return Response(b'{"error":"no quota state"}', 404, media_type="application/json")
        report = usage_report(state, current().policy, namespace=namespace, now=time.time())
        return Response(orjson.dumps(report), media_type="application/json")

    @api.get("/metrics")
    def metrics_endpoint(request: Request) -> Response:
        """Prometheus' scrape: the dollars admitted by namespace and owner are spend too."""
        refusal = _check(access, request, METRICS)
        if refusal is not None:
            body = orjson.dumps({"error": refusal.reason})
            return Response(body, refusal.status, refusal.headers, "application/json")
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return AdmissionEndpoints(
        service, api, max_body_bytes=max_body_bytes, noop_endpoint=noop_endpoint
    )


def create_app(settings: Settings | None = None) -> AdmissionEndpoints:
    """The application for `settings` (read from COSTGATE_* when None): uvicorn's factory."""
    settings = settings or Settings()
    metrics = Metrics()
    keyring = (
        Keyring(settings.approvers_dir, on_result=metrics.reloaded)
        if settings.approvers_dir
        else None
    )
    verify = keyring.verify if keyring is not None else None
    lookup = None
    referrers = None
    claims = None
    parents = None
    state: State
    if settings.state == "cluster":
        state = cluster_state(
            lambda: reloader.current(),
            ledger_namespace=settings.ledger_namespace,
            kubeconfig=settings.kubeconfig,
            context=settings.kube_context,
            in_cluster=settings.kubeconfig is None and settings.kube_context is None,
            stale_after=settings.stale_after,
        )
        assert state.cluster is not None
        lookup = state.cluster.lookup()
        referrers = state.cluster.referrers()
        claims = state.cluster.claims()
        parents = state.cluster.parents()
        metrics.watch_state(state.cluster.sync_state, lambda: len(state.tally))
    else:
        state = memory_state()
    # /status: bearer tokens where there is an API server to check them, else this host only
    status_access: StatusAccess = LoopbackOnly()
    default_auth = "kubernetes" if state.cluster is not None else "loopback"
    if (settings.status_auth or default_auth) == "kubernetes":
        api_client = (
            state.cluster.api_client
            if state.cluster is not None
            else load_api_client(
                kubeconfig=settings.kubeconfig,
                context=settings.kube_context,
                in_cluster=settings.kubeconfig is None and settings.kube_context is None,
            )
        )
        status_access = KubernetesAccess(api_client)

    def load() -> Config:
        config = load_config(settings.pricing, settings.policy, verify)
        if lookup is None:
            return config
        return dataclasses.replace(
            config, lookup=lookup, referrers=referrers, claims=claims, parents=parents
        )

    # Pricing and policy ConfigMaps change under the server: re-read, a bad file refused
    reloader = Reloader(
        "pricing+policy",
        [p for p in (settings.pricing, settings.policy) if p is not None],
        load,
        on_result=metrics.reloaded,
        interval=settings.reload_interval,
    ).start()
    if state.cluster is not None:
        state.cluster.start()
    app = build_app(
        reloader.current,
        max_body_bytes=settings.max_body_bytes,
        noop_endpoint=settings.noop_endpoint,
        state=state,
        metrics=metrics,
        status_access=status_access,
    )
    # Everything built so far (FastAPI, pydantic, the tables: ~60k objects) lives as long as
    # the process. Frozen out of the collector, a full collection no longer walks it: that
    # walk cost 30 ms, every few dozen requests, on the admission path.
    gc.collect()
    gc.freeze()
    return app
