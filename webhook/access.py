"""Who may read GET /status and GET /metrics, which both show what teams spend: /status
every team's usage, quotas and budgets, /metrics the estimated dollars admitted per namespace
and owner.

Two answers, chosen at start-up (`Settings.status_auth`):

* `KubernetesAccess` (the default with cluster state, so the shipped install): the caller
  sends `Authorization: Bearer <token>`; a TokenReview asks the API server who the token
  belongs to, then a SubjectAccessReview whether that user may `get` the virtual resource
  `usage.costgate.io` in the namespace asked for (cluster-wide when no namespace is asked
  for), or the non-resource URL `/metrics`, as kube-rbac-proxy does. RBAC grants it: a
  RoleBinding lets a team read its own namespace, a ClusterRoleBinding every namespace, and
  a ClusterRole with `nonResourceURLs: [/metrics]` lets Prometheus scrape. An allowed
  answer is kept for CACHE_SECONDS, as the API server keeps its own webhook authenticator's
  and authorizer's answers, so a scrape every 15 s does not cost two API calls each time.
* `LoopbackOnly` (the default with memory state: `costgate serve` on a workstation): only a
  caller on the same host (127.0.0.0/8, ::1) is answered.

Only these two reads are checked here; the admission endpoints are called by the API server
and never make these calls, so a review's hot path gains nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

if TYPE_CHECKING:  # the client is imported when KubernetesAccess is made
    from kubernetes.client import ApiClient

__all__ = [
    "CACHE_SECONDS",
    "METRICS",
    "STATUS_GROUP",
    "STATUS_RESOURCE",
    "KubernetesAccess",
    "LoopbackOnly",
    "Refusal",
    "StatusAccess",
    "Target",
    "status_of",
]

log = logging.getLogger("costgate.access")

# The virtual resource RBAC grants /status by: `get` on usage.costgate.io (no such API
# exists; RBAC rules can name it all the same, as kube-rbac-proxy's resourceAttributes do).
STATUS_GROUP = "costgate.io"
STATUS_RESOURCE = "usage"
# How long an allowed caller is let through without asking again: the API server's own
# defaults for webhook token authentication and authorization (10 s allowed). A revoked
# grant or token still reads for at most this long; a refusal is never kept.
CACHE_SECONDS = 10.0
_CACHED_CALLERS = 1024  # distinct (token, target) pairs kept; more and the oldest go


class Target(NamedTuple):
    """What a caller asks to read: /status (of one namespace, or of all: None), or /metrics."""

    path: Literal["/status", "/metrics"]
    namespace: str | None = None

    def __str__(self) -> str:
        if self.path == "/metrics":
            return "/metrics"
        return f'/status of namespace "{self.namespace}"' if self.namespace else "/status"


METRICS = Target("/metrics")


def status_of(namespace: str | None) -> Target:
    return Target("/status", namespace or None)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a caller gets no report: 401 (who are you?), 403 (not you), 503 (cannot tell)."""

    status: int
    reason: str

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="costgate"'} if self.status == 401 else {}


class StatusAccess(Protocol):
    def check(
        self, *, authorization: str | None, peer: str | None, target: Target
    ) -> Refusal | None:
        """None when this caller may read `target`."""


def _loopback(peer: str | None) -> bool:
    try:
        return peer is not None and ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


class LoopbackOnly:
    """Answers callers on this host only: for a webhook without a cluster to ask."""

    def check(
        self, *, authorization: str | None, peer: str | None, target: Target
    ) -> Refusal | None:
        if _loopback(peer):
            return None
        return Refusal(
            403,
            f"{target.path} answers only on this host (127.0.0.1, ::1) without a cluster to "
            "check tokens; set COSTGATE_STATUS_AUTH=kubernetes to accept bearer tokens",
        )


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _denied(username: str, target: Target) -> str:
    if target.path == "/metrics":
        return (
            f'user "{username}" may not get /metrics; grant it with RBAC (ClusterRole '
            "costgate-metrics-reader)"
        )
    scope = f'namespace "{target.namespace}"' if target.namespace else "all namespaces"
    return (
        f'user "{username}" may not get {STATUS_RESOURCE}.{STATUS_GROUP} in {scope}; grant it '
        "with RBAC (ClusterRole costgate-status-reader)"
    )


class KubernetesAccess:
    """Bearer tokens checked by the API server: TokenReview, then SubjectAccessReview."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        timeout: float = 5.0,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from kubernetes import client

        self._client = client
        self._authn = client.AuthenticationV1Api(api_client)
        self._authz = client.AuthorizationV1Api(api_client)
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        # sha256(token), target -> when the allowed answer goes stale; never the token itself
        self._allowed: dict[tuple[bytes, Target], float] = {}
        self._lock = threading.Lock()

    def check(
        self, *, authorization: str | None, peer: str | None, target: Target
    ) -> Refusal | None:
        token = _bearer(authorization)
        if token is None:
            return Refusal(
                401, f"{target.path} needs a bearer token (Authorization: Bearer <token>)"
            )
        key = (hashlib.sha256(token.encode()).digest(), target)
        now = self._clock()
        with self._lock:
            if self._allowed.get(key, 0.0) > now:
                return None
        refusal = self._ask(token, target)
        if refusal is None and self._cache_seconds > 0:
            with self._lock:
                if len(self._allowed) >= _CACHED_CALLERS:
                    self._allowed = {k: t for k, t in self._allowed.items() if t > now}
                    while len(self._allowed) >= _CACHED_CALLERS:  # insertion order: oldest
                        del self._allowed[next(iter(self._allowed))]
                self._allowed[key] = now + self._cache_seconds
        return refusal

    def _ask(self, token: str, target: Target) -> Refusal | None:
        c = self._client
        try:
            review = self._authn.create_token_review(
                c.V1TokenReview(spec=c.V1TokenReviewSpec(token=token)),
                _request_timeout=self._timeout,
            )
            found = review.status
            if found is None or not found.authenticated or found.user is None:
                return Refusal(401, "the bearer token was not accepted by the API server")
            user = found.user
            spec = c.V1SubjectAccessReviewSpec(
                user=user.username, uid=user.uid, groups=user.groups, extra=user.extra
            )
            if target.path == "/metrics":
                spec.non_resource_attributes = c.V1NonResourceAttributes(
                    path=target.path, verb="get"
                )
            else:
                spec.resource_attributes = c.V1ResourceAttributes(
                    group=STATUS_GROUP,
                    resource=STATUS_RESOURCE,
                    verb="get",
                    namespace=target.namespace or "",
                )
            access = self._authz.create_subject_access_review(
                c.V1SubjectAccessReview(spec=spec), _request_timeout=self._timeout
            )
        except Exception:  # unreachable, timed out, or our own RBAC missing: say so, log why
            log.exception("cannot check a %s caller with the API server", target.path)
            return Refusal(503, "cannot check the bearer token with the API server; try again")
        if access.status is None or not access.status.allowed:
            log.info("%s refused to %s", target, user.username)
            return Refusal(403, _denied(user.username or "", target))
        return None
