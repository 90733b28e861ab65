"""Who may read GET /status, which shows every team's usage, quotas and budgets.

Two answers, chosen at start-up (`Settings.status_auth`):

* `KubernetesAccess` (the default with cluster state, so the shipped install): the caller
  sends `Authorization: Bearer <token>`; a TokenReview asks the API server who the token
  belongs to, then a SubjectAccessReview whether that user may `get` the virtual resource
  `usage.costgate.io` in the namespace asked for (cluster-wide when no namespace is asked
  for), as kube-rbac-proxy does. RBAC grants it: a RoleBinding lets a team read its own
  namespace, a ClusterRoleBinding every namespace.
* `LoopbackOnly` (the default with memory state: `costgate serve` on a workstation): only a
  caller on the same host (127.0.0.0/8, ::1) is answered.

Only /status is checked here; the admission endpoints are called by the API server and never
make these calls, so a review's hot path gains nothing.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the client is imported when KubernetesAccess is made
    from kubernetes.client import ApiClient

__all__ = [
    "STATUS_GROUP",
    "STATUS_RESOURCE",
    "KubernetesAccess",
    "LoopbackOnly",
    "Refusal",
    "StatusAccess",
]

log = logging.getLogger("costgate.access")

# The virtual resource RBAC grants /status by: `get` on usage.costgate.io (no such API
# exists; RBAC rules can name it all the same, as kube-rbac-proxy's resourceAttributes do).
STATUS_GROUP = "costgate.io"
STATUS_RESOURCE = "usage"


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
        self, *, authorization: str | None, peer: str | None, namespace: str | None
    ) -> Refusal | None:
        """None when this caller may read the report for `namespace` (None: all of them)."""


def _loopback(peer: str | None) -> bool:
    try:
        return peer is not None and ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


class LoopbackOnly:
    """Answers callers on this host only: for a webhook without a cluster to ask."""

    def check(
        self, *, authorization: str | None, peer: str | None, namespace: str | None
    ) -> Refusal | None:
        if _loopback(peer):
            return None
        return Refusal(
            403,
            "/status answers only on this host (127.0.0.1, ::1) without a cluster to check "
            "tokens; set COSTGATE_STATUS_AUTH=kubernetes to accept bearer tokens",
        )


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _scope(namespace: str | None) -> str:
    return f'namespace "{namespace}"' if namespace else "all namespaces"


class KubernetesAccess:
    """Bearer tokens checked by the API server: TokenReview, then SubjectAccessReview."""

    def __init__(self, api_client: ApiClient, *, timeout: float = 5.0) -> None:
        from kubernetes import client

        self._client = client
        self._authn = client.AuthenticationV1Api(api_client)
        self._authz = client.AuthorizationV1Api(api_client)
        self._timeout = timeout

    def check(
        self, *, authorization: str | None, peer: str | None, namespace: str | None
    ) -> Refusal | None:
        token = _bearer(authorization)
        if token is None:
            return Refusal(401, "/status needs a bearer token (Authorization: Bearer <token>)")
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
            attributes = c.V1ResourceAttributes(
                group=STATUS_GROUP,
                resource=STATUS_RESOURCE,
                verb="get",
                namespace=namespace or "",
            )
            spec = c.V1SubjectAccessReviewSpec(
                user=user.username,
                uid=user.uid,
                groups=user.groups,
                extra=user.extra,
                resource_attributes=attributes,
            )
            access = self._authz.create_subject_access_review(
                c.V1SubjectAccessReview(spec=spec), _request_timeout=self._timeout
            )
        except Exception:  # unreachable, timed out, or our own RBAC missing: say so, log why
            log.exception("cannot check a /status caller with the API server")
            return Refusal(503, "cannot check the bearer token with the API server; try again")
        if access.status is None or not access.status.allowed:
            log.info("/status refused to %s for %s", user.username, _scope(namespace))
            return Refusal(
                403,
                f'user "{user.username}" may not get {STATUS_RESOURCE}.{STATUS_GROUP} in '
                f"{_scope(namespace)}; grant it with RBAC (ClusterRole costgate-status-reader)",
            )
        return None
