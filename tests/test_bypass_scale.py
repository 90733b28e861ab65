"""Getting GPUs past the gate with `kubectl scale` or an HPA (issue #14).

A Deployment admitted at 3 replicas could be taken to 8 with `kubectl scale` (or by the HPA
controller) through the `scale` subresource, whose review carries an autoscaling/v1 Scale:
no labels, no pod template, nothing to price. costgate now prices it as the edit of the object
it resizes, read from its watch cache (never asked of the API server during the review); a
scale-up it cannot price (offline, or an object the cache has not seen) is allowed with a
warning that says so. The reviews are the ones a v1.36 API server sent
(`tests/fixtures/admission-kinds/`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
import yaml

from tests.support import cel
from tests.support.config import policy_with
from tests.support.fakeapi import FakeApiServer
from tests.support.paths import ADMISSION_KINDS, REPO
from tests.support.polling import eventually
from tests.support.services import served
from webhook.service import AdmissionService
from webhook.state.cluster import cluster_state
from webhook.tables import load_config

H100_MONTH = 6.88 * 730


def _review(name: str) -> dict[str, Any]:
    return json.loads((ADMISSION_KINDS / f"{name}.json").read_text())


def _object(name: str) -> dict[str, Any]:
    return _review(name)["request"]["object"]


def _send(service: AdmissionService, name: str, verb: str = "validate") -> dict[str, Any]:
    answer = service.handle(orjson.dumps(_review(name)), verb)
    assert answer.status == 200
    return orjson.loads(answer.body)["response"]


def _with_parents(objects: Mapping[tuple[str, str, str, str], Any], **policy: Any):
    """The service as `costgate serve` builds it, with a watch cache holding `objects`."""
    config = load_config()
    if policy:
        config = dataclasses.replace(config, policy=policy_with(**policy))
    return AdmissionService(dataclasses.replace(config, parents=lambda *key: objects.get(key)))


DEPLOYMENT = ("apps", "deployments", "capture", "llm-serve")


def test_kubectl_scale_of_a_gpu_deployment_is_priced_as_that_edit():
    """3 -> 5 replicas of 2 H100 each: $50,224.00 a month, above the $2,000 serving
    threshold, refused on the Scale (before: allowed, unpriced)."""
    service = _with_parents({DEPLOYMENT: _object("validate-deployment-create-gpu")})
    response = _send(service, "validate-deployment-scale")
    assert response["allowed"] is False
    assert "$50,224.00/month (10 × h100-80gb" in response["status"]["message"]
    assert response["auditAnnotations"]["workload"] == "Deployment/llm-serve"
    # 4 -> 8, as `kubectl scale --replicas=8` sent it
    response = _send(service, "validate-deployment-scale-deny")
    assert "$80,358.40/month (16 × h100-80gb" in response["status"]["message"]


def test_the_hpa_controller_scaling_up_is_priced_too():
    service = _with_parents({DEPLOYMENT: _object("validate-deployment-create-gpu")})
    response = _send(service, "validate-deployment-scale-by-hpa")  # 2 -> 3
    assert response["allowed"] is False
    assert "$30,134.40/month (6 × h100-80gb" in response["status"]["message"]
    allowing = _with_parents(
        {DEPLOYMENT: _object("validate-deployment-create-gpu")},
        serving_threshold_usd_per_month=10**6,
    )
    response = _send(allowing, "validate-deployment-scale-by-hpa")
    assert response["allowed"] is True
    assert float(response["auditAnnotations"]["estimated-cost-usd"]) == round(6 * H100_MONTH, 2)


def test_a_leaderworkerset_scale_is_priced_from_its_groups():
    """LeaderWorkerSet vllm, 2 -> 3 groups of a leader and a worker with 8 GPUs each."""
    key = ("leaderworkerset.x-k8s.io", "leaderworkersets", "capture", "vllm")
    service = _with_parents({key: _object("validate-leaderworkerset-create")})
    response = _send(service, "validate-leaderworkerset-scale")
    assert response["allowed"] is False
    answer = service.handle(orjson.dumps(_review("validate-leaderworkerset-scale")), "validate")
    assert answer.decision is not None and answer.decision.workload is not None
    assert answer.decision.workload.total_gpus == 3 * 2 * 8


def test_scaling_down_and_objects_without_gpus_say_nothing():
    service = _with_parents({DEPLOYMENT: {}})  # the cache knows it: no GPU in its template
    response = _send(service, "validate-deployment-scale")
    assert response["allowed"] is True and "warnings" not in response
    service = _with_parents({DEPLOYMENT: _object("validate-deployment-create-gpu")})
    for name in ("validate-deployment-scale-warn", "validate-statefulset-scale-zero"):
        response = _send(service, name)  # 4 -> 2, 1 -> 0
        assert response["allowed"] is True and "warnings" not in response, name


def test_a_scale_costgate_cannot_see_is_allowed_and_said_so():
    """Offline (`costgate serve` without a cluster) or an object the cache has not seen: the
    scale-up is let through (denying would stop every autoscaler), with a warning."""
    response = _send(served(), "validate-deployment-scale")
    assert response["allowed"] is True
    (warning,) = response["warnings"]
    assert 'cannot see deployment "llm-serve" here, so scaling it to 5 replicas was not' in warning


def test_the_mutating_webhook_never_patches_a_scale():
    service = _with_parents({DEPLOYMENT: _object("validate-deployment-create-gpu")})
    response = _send(service, "mutate-deployment-scale", "mutate")
    assert response == {"uid": response["uid"], "allowed": True}


def _more_replicas() -> str:
    hooks = {
        w["name"]: w
        for doc in yaml.safe_load_all((REPO / "manifests/base/webhooks.yaml").read_text())
        for w in doc["webhooks"]
    }
    (condition,) = hooks["scale.validate.costgate.io"]["matchConditions"]
    return str(condition["expression"])


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("validate-deployment-scale", True),
        ("validate-deployment-scale-deny", True),
        ("validate-deployment-scale-by-hpa", True),
        ("validate-leaderworkerset-scale", True),
        ("validate-pytorchjob-scale", True),
        ("validate-deployment-scale-warn", False),  # fewer replicas
        ("validate-statefulset-scale-zero", False),  # replicas omitted: 0
    ],
)
def test_only_scale_ups_are_sent(name, sent):
    request = _review(name)["request"]
    values = {"object": request["object"], "oldObject": request["oldObject"]}
    assert cel.evaluate(_more_replicas(), **values) is sent


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as server:
        yield server


def test_the_cluster_cache_holds_what_a_scale_resizes(api: FakeApiServer):
    """End to end through the real client: the watch cache lists the Deployment, and the
    Scale is priced from it with no call to the API server during the review."""
    gpu = _object("validate-deployment-create-gpu")
    cpu = json.loads(json.dumps(gpu))
    cpu["metadata"]["name"] = "web"
    cpu["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    for obj in (gpu, cpu):
        obj["metadata"].pop("resourceVersion", None)
        api.create("deployments", obj)
    config = load_config()
    state = cluster_state(
        lambda: config, ledger_namespace="costgate-system", api_client=api.client()
    )
    cluster = state.cluster
    assert cluster is not None
    cluster.start()
    try:
        assert cluster.wait_synced(10)
        parents = cluster.parents()
        eventually(lambda: parents(*DEPLOYMENT) is not None)
        assert parents("apps", "deployments", "capture", "web") == {}  # no GPU: kept small
        assert parents(*DEPLOYMENT)["spec"]["replicas"] == 3
        service = AdmissionService(dataclasses.replace(config, parents=parents))
        api.down()  # the review reads memory only
        response = _send(service, "validate-deployment-scale")
        assert response["allowed"] is False
        assert "10 × h100-80gb" in response["status"]["message"]
    finally:
        api.up()
        cluster.stop()


def test_a_kinds_charge_is_confirmed_by_what_the_watch_sees(api: FakeApiServer):
    """A budget charge stays pending until the watch sees its object, and is dropped if it
    never does. The watch follows Deployments (stamped: their own charge) and pods and Jobs
    (a marked one confirms its controlling owner, a PyTorchJob the watch does not follow);
    before, both charges were dropped as if the objects had been denied."""
    config = load_config()
    state = cluster_state(
        lambda: config, ledger_namespace="costgate-system", api_client=api.client()
    )
    cluster = state.cluster
    assert cluster is not None
    cluster.ledger.grace = 0.0
    deployment = _object("validate-deployment-create-gpu")
    deployment["metadata"].pop("resourceVersion", None)
    deployment["metadata"].setdefault("annotations", {})["costgate.io/estimated-cost"] = "1.00"
    pod = _object("validate-pod-create-by-replicaset-controller")
    pod["metadata"].pop("resourceVersion", None)
    pod["metadata"]["name"] = "train-worker-0"
    pod["metadata"]["annotations"] = {"costgate.io/priced-by": "kubeflow.org/PyTorchJob"}
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "train",
         "uid": "pytorchjob-uid", "controller": True}
    ]  # fmt: skip
    created = api.create("deployments", deployment)
    api.create("pods", pod)
    cluster.start()
    try:
        assert cluster.wait_synced(10)
        uid = created["metadata"]["uid"]
        eventually(lambda: cluster.seen(uid) and cluster.seen("pytorchjob-uid"))
        assert cluster.seen("never-created") is False
    finally:
        cluster.stop()
