"""Getting GPUs past the gate by submitting a kind it did not read (issue #14).

Through a real API server with its controllers, `kubectl apply` of a 3 × 2 GPU Deployment
printed `created` with no warning, and the only trace of the denial was a `FailedCreate`
event on its ReplicaSet; a PyTorchJob, RayJob, LeaderWorkerSet or InferenceService was not
read at all. These tests replay the reviews a v1.36 API server sent
(`tests/fixtures/admission-kinds/`): the objects are now priced where they are submitted,
on create and on replica edits, with the same rules and messages as Pods and Jobs; the
controllers' children are recognised and not priced again.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import orjson
import pytest

from tests.support.answers import patched
from tests.support.paths import ADMISSION_KINDS
from tests.support.services import served, service_for
from webhook.cli import main
from webhook.core.holding import holding
from webhook.service import AdmissionService
from webhook.tables import load_config

DEPLOYMENT_MONTH = 30134.40  # 3 replicas × 2 H100 ($6.88/h) × 730 h


def _review(name: str) -> dict[str, Any]:
    return json.loads((ADMISSION_KINDS / f"{name}.json").read_text())


def _send(service: AdmissionService, body: dict[str, Any], verb: str = "validate") -> Any:
    answer = service.handle(orjson.dumps(body), verb)
    assert answer.status == 200, answer.body[:300]
    return orjson.loads(answer.body)["response"]


def _ops(response: dict[str, Any]) -> list[dict[str, Any]]:
    if "patch" not in response:
        return []
    return json.loads(base64.b64decode(response["patch"]))


def test_a_gpu_deployment_is_priced_at_submission_as_the_cli_prices_it(tmp_path, capsys):
    """kubectl create of 3 × 2 H100 is refused at `kubectl apply` with the monthly price,
    not admitted to have its pods refused one by one by the ReplicaSet controller; and
    `costgate estimate -f` of the same manifest says the same."""
    response = _send(served(), _review("validate-deployment-create-gpu"))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "$30,134.40/month (6 × h100-80gb at $6.88/h × 730h/month)" in message
    assert response["auditAnnotations"]["reasons"] == "over-threshold"

    capsys.readouterr()
    manifest = ADMISSION_KINDS / "manifests" / "deployment-gpu.yaml"
    assert main(["estimate", "-f", str(manifest), "-o", "json"]) == 1
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["cost_usd"], row["gpus"], row["allowed"]) == (DEPLOYMENT_MONTH, 6, False)
    assert [r["message"] for r in row["reasons"]] == [message]


def test_the_deployment_counts_against_quotas_at_submission():
    """A namespace quota of 4 GPUs: the 6-GPU Deployment is refused when it is submitted."""
    service, _ = service_for(quota={"max_gpus": 4}, serving_threshold_usd_per_month=10**6)
    body = _review("validate-deployment-create-gpu")
    response = _send(service, body)
    assert response["allowed"] is False
    assert response["auditAnnotations"]["reasons"] == "over-quota"


def test_replica_edits_are_priced_when_they_raise_the_cost():
    """`kubectl patch` of replicas 5 -> 4 (captured) is allowed; 4 -> 5, and 2 -> 4 GPUs a
    pod in the template, are priced again like a new Deployment."""
    service = served()
    lowered = _review("validate-deployment-patch-replicas")
    assert _send(service, lowered)["allowed"] is True
    raised = copy.deepcopy(lowered)
    request = raised["request"]
    request["object"], request["oldObject"] = request["oldObject"], request["object"]
    response = _send(service, raised)
    assert response["allowed"] is False
    assert "$50,224.00/month (10 × h100-80gb" in response["status"]["message"]
    response = _send(service, _review("validate-deployment-patch-template-gpus"))
    assert response["allowed"] is False
    assert "8 × h100-80gb" in response["status"]["message"]


def _allowing() -> AdmissionService:
    return served(serving_threshold_usd_per_month=10**6, threshold_usd=10**5)


def test_an_admitted_deployment_marks_its_pod_template():
    """The mutating answer stamps the estimate, and writes the attribution labels and
    costgate.io/priced-by into the pod template: the ReplicaSet and its pods inherit them."""
    body = _review("mutate-deployment-create-gpu")
    response = _send(_allowing(), body, "mutate")
    stored = patched(body["request"]["object"], response)
    assert stored["metadata"]["annotations"] == {"costgate.io/estimated-cost": "30134.40"}
    template = stored["spec"]["template"]["metadata"]
    assert template["annotations"] == {"costgate.io/priced-by": "apps/Deployment"}
    assert template["labels"]["owner"] == "alice"
    assert not any("activeDeadlineSeconds" in op["path"] for op in _ops(response))


def _marked(name: str) -> dict[str, Any]:
    body = _review(name)
    metadata = body["request"]["object"]["metadata"]
    metadata.setdefault("annotations", {})["costgate.io/priced-by"] = "apps/Deployment"
    return body


def test_the_controllers_children_are_not_priced_again():
    """The ReplicaSet the deployment controller makes is priced with its Deployment; the
    pods the ReplicaSet controller makes from a marked template too (the capture's pod, as
    it is once its Deployment was admitted). Before, each pod was priced per month on its
    own and refused inside the controller, where nobody looks."""
    service = served()
    response = _send(service, _review("validate-replicaset-create-by-deployment-controller"))
    assert response["allowed"] is True
    assert response["auditAnnotations"]["priced-with"] == "owner"
    for name in (
        "validate-pod-create-by-replicaset-controller",
        "validate-pod-create-rollout-by-replicaset-controller",
    ):
        response = _send(service, _marked(name))
        assert response["allowed"] is True, name
        assert response["auditAnnotations"]["priced-with"] == "owner", name
    # the deployment controller's scaling of its ReplicaSets is answered at once
    for name in (
        "validate-replicaset-update-by-deployment-controller-scaleup",
        "validate-replicaset-update-by-deployment-controller-scaledown",
    ):
        response = _send(service, _review(name))
        assert response["allowed"] is True and "warnings" not in response, name


def test_an_unmarked_pod_or_a_users_marked_pod_is_still_priced():
    """A ReplicaSet pod whose template was never priced (made before costgate) is priced per
    month as before; the mark on a pod a user submits proves nothing."""
    service = served()
    response = _send(service, _review("validate-pod-create-by-replicaset-controller"))
    assert response["allowed"] is False
    assert "$10,044.80/month" in response["status"]["message"]
    spoofed = _marked("validate-pod-create-by-replicaset-controller")
    spoofed["request"]["userInfo"] = {"username": "alice", "groups": ["system:authenticated"]}
    response = _send(service, spoofed)
    assert response["allowed"] is False
    assert "estimated cost" in response["status"]["message"]


@pytest.mark.parametrize(
    "name",
    [
        "validate-pod-update-finalizer-by-job-controller-deleting",
        "validate-pod-update-finalizer-by-job-controller-suspend",
    ],
)
def test_the_job_controllers_finalizer_updates_pass(name):
    response = _send(served(), _review(name))
    assert response["allowed"] is True and "warnings" not in response


def test_a_training_job_gets_its_dead_mans_switch_and_its_pods_their_attribution():
    """The captured PyTorchJob, labelled: /mutate creates spec.runPolicy with the default
    deadline (the operator's own limit, so the pods are not killed at 12 h while the job may
    run 24 h), and copies labels and costgate.io/ annotations into every replica's pod
    template, which is where the operator takes its pods' metadata from."""
    body = _review("mutate-pytorchjob-create")
    obj = body["request"]["object"]
    obj["metadata"]["labels"] = {"owner": "alice", "experiment": "mnist"}
    obj["metadata"]["annotations"] = {"costgate.io/max-runtime": "24h"}
    response = _send(_allowing(), body, "mutate")
    stored = patched(obj, response)
    assert stored["spec"]["runPolicy"] == {"activeDeadlineSeconds": 86400}
    for role in ("Master", "Worker"):
        metadata = stored["spec"]["pytorchReplicaSpecs"][role]["template"]["metadata"]
        assert metadata["labels"] == {"owner": "alice", "experiment": "mnist"}
        assert metadata["annotations"] == {
            "costgate.io/max-runtime": "24h",
            "costgate.io/priced-by": "kubeflow.org/PyTorchJob",
        }
    validated = _send(_allowing(), _review("validate-pytorchjob-create"))
    assert validated["allowed"] is False  # the capture has no labels
    assert "missing required labels owner, experiment" in validated["status"]["message"]


@pytest.mark.parametrize(
    ("name", "gpus"),
    [
        ("validate-tfjob-create", 2),
        ("validate-rayjob-create-generatename", 4),
        ("validate-raycluster-apply", 4),
        ("validate-jobset-create-gpu", 8),
        ("validate-leaderworkerset-create", 32),
        ("validate-inferenceservice-create", 1),
        ("validate-notebook-create-gpu", 1),
        ("validate-volcanojob-create", 2),
    ],
)
def test_each_captured_operator_kind_is_priced(name, gpus):
    """Every ML-operator object a real API server sent is priced (none was before): the
    decision names its GPUs in the estimate, and the `jobs` of batch.volcano.sh are read as
    Volcano's, not as batch/v1 Jobs."""
    answer = served().handle(orjson.dumps(_review(name)), "validate")
    response = orjson.loads(answer.body)["response"]
    # unlabelled upstream samples, or above the $100 / $2,000 a month thresholds
    assert response["allowed"] is False
    assert set(response["auditAnnotations"]["reasons"].split(",")) & {
        "missing-labels",
        "over-threshold",
    }
    assert float(response["auditAnnotations"]["estimated-cost-usd"]) > 0
    assert answer.decision is not None and answer.decision.workload is not None
    assert answer.decision.workload.total_gpus == gpus


def test_the_mpijob_without_gpus_is_not_costgates():
    response = _send(served(), _review("validate-mpijob-create"))
    assert response["allowed"] is True and "auditAnnotations" not in response


def _pod_of(owner_kind: str, owner_version: str, annotations: dict[str, str]) -> dict[str, Any]:
    pod = _review("validate-pod-create-by-replicaset-controller")["request"]["object"]
    pod["metadata"]["annotations"] = annotations
    pod["metadata"]["ownerReferences"] = [
        {
            "apiVersion": owner_version,
            "kind": owner_kind,
            "name": "x",
            "uid": "u",
            "controller": True,
        }
    ]
    pod["metadata"]["uid"] = "pod-uid"
    return pod


def test_quotas_count_a_priced_parents_pods_as_they_run():
    """The watch does not follow Deployments or the operators' kinds: their marked pods count
    on their own, serving ones at their monthly price, and a Job's pod with its Job."""
    config = load_config()
    marked = {"costgate.io/priced-by": "apps/Deployment"}
    usage = holding("", "Pod", _pod_of("ReplicaSet", "apps/v1", marked), config)
    assert usage is not None
    assert (usage.gpus, usage.usd) == (2, round(2 * 6.88 * 730, 2))
    batch = {"costgate.io/priced-by": "kubeflow.org/PyTorchJob"}
    usage = holding("", "Pod", _pod_of("PyTorchJob", "kubeflow.org/v1", batch), config)
    assert usage is not None and usage.gpus == 2
    job_pod = _pod_of("Job", "batch/v1", {"costgate.io/priced-by": "jobset.x-k8s.io/JobSet"})
    assert holding("", "Pod", job_pod, config) is None  # its Job is watched and counted
