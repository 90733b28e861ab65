"""Who may read GET /status (every team's usage, quotas and budgets) and GET /metrics (the
dollars admitted per namespace and owner).

Through the ASGI app with the real `kubernetes` client against the fake API server: a bearer
token, checked by a TokenReview, then a SubjectAccessReview for `get` on usage.costgate.io in
the namespace asked for (cluster-wide for all of them). Without a cluster: callers on this
host only. /metrics the same way, with a SubjectAccessReview for the non-resource URL
`/metrics` (what a Prometheus service account's ClusterRole grants). End to end: `costgate
serve` with cluster state asks for a token by default, and `costgate status --server
--token-file` sends one. And the RBAC the install ships for it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.support.builders import gpu_pod, review
from tests.support.config import env_without_costgate, policy_with
from tests.support.fakeapi import FakeApiServer
from tests.support.paths import REPO
from tests.support.servers import Server, start_server, stop_process
from tests.support.tools import require_tool
from webhook.access import CACHE_SECONDS, STATUS_GROUP, STATUS_RESOURCE, KubernetesAccess
from webhook.core.engine import Config
from webhook.server.app import AdmissionEndpoints, build_app
from webhook.state import memory_state
from webhook.tables import load_pricing

TOKEN = "alice-token"  # a TokenReview says: alice, in group team-a
REMOTE = ("10.244.1.7", 40000)  # another pod
LOCAL = ("127.0.0.1", 40000)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.add_user(TOKEN, "alice", groups=["team-a"], uid="u-1")
        yield server


@pytest.fixture
def app(api: FakeApiServer) -> Iterator[AdmissionEndpoints]:
    config = Config(table=load_pricing(), policy=policy_with(quota={"max_gpus": 8}))
    with api.client() as client:
        yield build_app(
            config,
            max_body_bytes=3 * 1024 * 1024,
            state=memory_state(),
            status_access=KubernetesAccess(client, timeout=2.0),
        )


def _get(
    app: AdmissionEndpoints,
    *,
    token: str | None = None,
    namespace: str | None = None,
    client: tuple[str, int] = REMOTE,
    path: str = "/status",
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    params = {"namespace": namespace} if namespace is not None else {}

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.get(path, headers=headers, params=params)

    return asyncio.run(call())


def _grant(api: FakeApiServer, subject: str, namespace: str | None) -> None:
    api.grant(subject, "get", STATUS_GROUP, STATUS_RESOURCE, namespace)


# --------------------------------------------------------------------------- bearer tokens


def test_without_a_token_the_report_is_refused_with_401(app):
    answer = _get(app)
    assert (answer.status_code, answer.headers.get("www-authenticate")) == (
        401,
        'Bearer realm="costgate"',
    )


def test_a_token_the_api_server_does_not_know_is_refused_with_401(app, api):
    _grant(api, "alice", None)
    assert _get(app, token="forged").status_code == 401


def test_a_known_user_without_the_grant_is_refused_with_403_naming_the_grant(app):
    answer = _get(app, token=TOKEN)
    assert (answer.status_code, answer.json()["error"]) == (
        403,
        'user "alice" may not get usage.costgate.io in all namespaces; grant it with RBAC '
        "(ClusterRole costgate-status-reader)",
    )


@pytest.mark.parametrize(
    ("subject", "granted_in", "asked_for", "expected"),
    [
        pytest.param("alice", None, None, 200, id="a cluster-wide grant reads every namespace"),
        pytest.param("alice", None, "team-b", 200, id="a cluster-wide grant reads any one"),
        pytest.param("alice", "team-a", "team-a", 200, id="a namespace grant reads its own"),
        pytest.param("alice", "team-a", "team-b", 403, id="a namespace grant reads no other"),
        pytest.param("alice", "team-a", None, 403, id="a namespace grant is not all of them"),
        pytest.param("alice", "team-a", "", 403, id="an empty namespace is all of them"),
        pytest.param("group:team-a", "team-a", "team-a", 200, id="a grant to the user's group"),
        pytest.param("group:team-b", None, None, 403, id="a grant to another group"),
        pytest.param("bob", None, None, 403, id="a grant to another user"),
    ],
)
def test_the_subject_access_review_decides_per_namespace(
    app, api, subject, granted_in, asked_for, expected
):
    _grant(api, subject, granted_in)
    assert _get(app, token=TOKEN, namespace=asked_for).status_code == expected


def test_an_allowed_reader_gets_the_report_of_the_namespace_asked_for(app, api):
    _grant(api, "alice", "team-a")
    rows = _get(app, token=TOKEN, namespace="team-a").json()["namespaces"]
    assert [row["namespace"] for row in rows] == ["team-a"]


def test_an_unreachable_api_server_is_503_not_an_open_door(app, api):
    _grant(api, "alice", None)
    api.down()
    assert _get(app, token=TOKEN).status_code == 503


def _reviews(api: FakeApiServer) -> int:
    reviews = ("/tokenreviews", "/subjectaccessreviews")
    return sum(path.endswith(reviews) for _, path, _ in api.requests)


def test_an_allowed_reader_is_not_asked_about_again_within_the_cache_time(app, api):
    _grant(api, "alice", "team-a")
    before = _reviews(api)
    assert [_get(app, token=TOKEN, namespace="team-a").status_code for _ in range(3)] == [200] * 3
    assert _reviews(api) - before == 2  # one TokenReview and one SubjectAccessReview


def test_a_refusal_is_asked_about_again_so_a_new_grant_counts_at_once(app, api):
    assert _get(app, token=TOKEN, namespace="team-a").status_code == 403
    _grant(api, "alice", "team-a")
    assert _get(app, token=TOKEN, namespace="team-a").status_code == 200


def test_an_allowed_answer_for_one_namespace_is_not_kept_for_another(app, api):
    _grant(api, "alice", "team-a")
    assert _get(app, token=TOKEN, namespace="team-a").status_code == 200
    assert _get(app, token=TOKEN, namespace="team-b").status_code == 403


def test_the_cached_answer_goes_stale_after_cache_seconds(api):
    now = [0.0]
    config = Config(table=load_pricing(), policy=policy_with())
    with api.client() as client:
        access = KubernetesAccess(client, timeout=2.0, clock=lambda: now[0])
        app = build_app(config, max_body_bytes=1 << 20, state=memory_state(), status_access=access)
        _grant(api, "alice", None)
        assert _get(app, token=TOKEN).status_code == 200
        api.revoke_all()
        now[0] += CACHE_SECONDS - 0.5
        assert _get(app, token=TOKEN).status_code == 200  # within the cache time
        now[0] += 1.0
        assert _get(app, token=TOKEN).status_code == 403


# --------------------------------------------------------------------------- /metrics


def test_metrics_without_a_token_are_refused_with_401(app):
    answer = _get(app, path="/metrics")
    assert (answer.status_code, answer.json()["error"]) == (
        401,
        "/metrics needs a bearer token (Authorization: Bearer <token>)",
    )


def test_metrics_to_a_user_without_the_url_grant_are_refused_naming_the_role(app, api):
    _grant(api, "alice", None)  # reading /status everywhere is not scraping /metrics
    answer = _get(app, token=TOKEN, path="/metrics")
    assert (answer.status_code, answer.json()["error"]) == (
        403,
        'user "alice" may not get /metrics; grant it with RBAC (ClusterRole '
        "costgate-metrics-reader)",
    )


def test_metrics_to_a_subject_granted_the_url_are_served(app, api):
    api.grant_url("group:team-a", "get", "/metrics")
    answer = _get(app, token=TOKEN, path="/metrics")
    assert (answer.status_code, "costgate_admission_requests_total" in answer.text) == (200, True)


def test_a_metrics_grant_does_not_read_status(app, api):
    api.grant_url("alice", "get", "/metrics")
    assert _get(app, token=TOKEN, path="/metrics").status_code == 200
    assert _get(app, token=TOKEN).status_code == 403


def test_a_review_never_asks_the_api_server_who_is_calling(app, api):
    """The admission path: no TokenReview, no SubjectAccessReview, no call at all."""
    before = len(api.requests)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=REMOTE)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.post("/validate", content=review(gpu_pod(2)))

    assert asyncio.run(call()).json()["response"]["allowed"] and api.requests[before:] == []


# --------------------------------------------------------------------------- no cluster


def _local_app() -> AdmissionEndpoints:
    config = Config(table=load_pricing(), policy=policy_with())
    return build_app(config, max_body_bytes=3 * 1024 * 1024, state=memory_state())


def test_without_a_cluster_another_host_is_refused_with_403():
    assert _get(_local_app(), client=REMOTE).status_code == 403


def test_without_a_cluster_this_host_gets_the_report():
    assert _get(_local_app(), client=LOCAL).status_code == 200


def test_without_a_cluster_metrics_are_served_on_this_host_only():
    app = _local_app()
    statuses = [_get(app, client=c, path="/metrics").status_code for c in (REMOTE, LOCAL)]
    assert statuses == [403, 200]


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def cluster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`costgate serve` with cluster state on the fake API server and no COSTGATE_STATUS_AUTH:
    the shipped install's defaults. alice's token reads every namespace."""
    tmp = tmp_path_factory.mktemp("serve")
    with FakeApiServer() as api:
        api.add_user(TOKEN, "alice", groups=["team-a"])
        _grant(api, "alice", None)
        api.grant_url("alice", "get", "/metrics")
        env = {
            "COSTGATE_STATE": "cluster",
            "COSTGATE_KUBECONFIG": str(api.kubeconfig(tmp / "kubeconfig")),
        }
        server = start_server(tmp, env=env)
        try:
            yield server
        finally:
            stop_process(server.process)


def _costgate_status(server: Server, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "webhook.cli", "status", "--server", server.base_url]
    return subprocess.run(
        [*command, "--ca", str(server.ca), "-o", "json", *extra],
        capture_output=True,
        text=True,
        env=env_without_costgate(),
        timeout=60,
    )


@pytest.mark.slow
def test_the_served_status_asks_for_a_token_by_default_with_cluster_state(cluster_server):
    with cluster_server.client() as client:
        assert client.get("/status").status_code == 401


@pytest.mark.slow
def test_the_served_metrics_ask_for_a_token_by_default_with_cluster_state(cluster_server):
    with cluster_server.client() as client:
        refused = client.get("/metrics").status_code
        served = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (refused, served.status_code, "costgate_" in served.text) == (401, 200, True)


@pytest.mark.slow
def test_costgate_status_without_a_token_says_why_it_was_refused(cluster_server):
    done = _costgate_status(cluster_server)
    assert (done.returncode, "401: /status needs a bearer token" in done.stderr) == (2, True)


@pytest.mark.slow
def test_costgate_status_sends_the_token_file(cluster_server, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    done = _costgate_status(cluster_server, "--token-file", str(token))
    assert (done.returncode, '"state": "cluster"' in done.stdout) == (0, True), done.stderr


# --------------------------------------------------------------------------- the install


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl", hint="the test extra ships kubectl on Linux")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(REPO / "manifests" / "base")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [o for o in yaml.safe_load_all(rendered) if o]


@pytest.fixture(scope="module")
def rbac(base: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in base if o["apiVersion"] == "rbac.authorization.k8s.io/v1"]


def _named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_the_service_account_may_create_token_and_access_reviews(rbac):
    binding = _named(rbac, "ClusterRoleBinding", "costgate-auth-delegator")
    assert (binding["roleRef"], binding["subjects"]) == (
        {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:auth-delegator",  # built in: these two creates, nothing else
        },
        [{"kind": "ServiceAccount", "name": "costgate", "namespace": "costgate-system"}],
    )


def test_the_status_reader_role_grants_exactly_what_the_webhook_asks_for(rbac):
    role = _named(rbac, "ClusterRole", "costgate-status-reader")
    assert role["rules"] == [
        {"apiGroups": [STATUS_GROUP], "resources": [STATUS_RESOURCE], "verbs": ["get"]}
    ]


def test_nobody_is_granted_the_status_reader_role_by_the_install(rbac):
    assert [
        b["metadata"]["name"]
        for b in rbac
        if b["kind"].endswith("Binding") and b["roleRef"]["name"] == "costgate-status-reader"
    ] == []


def test_the_shipped_deployment_checks_tokens(base):
    """Cluster state, and no COSTGATE_STATUS_AUTH turning it to loopback: bearer tokens."""
    (deployment,) = [o for o in base if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["COSTGATE_STATE"], env.get("COSTGATE_STATUS_AUTH", "kubernetes")) == (
        "cluster",
        "kubernetes",
    )


def test_the_metrics_reader_role_grants_exactly_the_url_the_webhook_asks_for(rbac):
    role = _named(rbac, "ClusterRole", "costgate-metrics-reader")
    assert role["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
