"""Bypass attempts by grace period: a GPU pod whose terminationGracePeriodSeconds outlives
its deadline. The kubelet stops a pod past its activeDeadlineSeconds (and a Job's or a
Workflow's deadline deletes its pods) gracefully: a preStop hook runs, and the pod keeps its
GPUs, for the whole grace period. Each test is one attempt, sent through the real
`AdmissionService.handle` (or `costgate estimate`), as in tests/test_bypass.py.

The API server writes the default (30 s) into every pod it stores, so the webhook sees 30
where `costgate estimate` sees none; a grace period up to that default is not priced (both
must agree), a longer one is priced after the runtime, and the policy's max_grace_seconds
(default 300) caps it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.answers import answer
from tests.support.builders import H100, LABELS, T4, gpu_pod, review
from tests.support.services import served
from webhook.cli import main
from webhook.service import AdmissionService

MONTH = 30 * 86400  # 2,592,000 s
H100_RATE = 6.88
SLEEP = {"preStop": {"exec": {"command": ["sleep", "infinity"]}}}


@pytest.fixture(scope="module")
def default() -> AdmissionService:
    return served()


def lingering_pod(grace: int | None, *, gpus: int = 8, runtime: str = "1h") -> dict[str, Any]:
    """A labelled H100 pod declaring `runtime`, whose container sleeps in preStop for as
    long as its grace period lets it."""
    obj = gpu_pod(gpus, runtime=runtime)
    obj["spec"]["containers"][0]["lifecycle"] = SLEEP
    if grace is not None:
        obj["spec"]["terminationGracePeriodSeconds"] = grace
    return obj


def codes(response: dict[str, Any]) -> set[str]:
    reasons = response.get("auditAnnotations", {}).get("reasons", "")
    return set(reasons.split(",")) - {""}


def job(pod_spec_extra: dict[str, Any]) -> dict[str, Any]:
    """A labelled Job of one H100 pod, 1h declared, with `pod_spec_extra` in its pod spec."""
    container = {
        "name": "main",
        "image": "busybox",
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
        "lifecycle": SLEEP,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "train",
            "namespace": "team-a",
            "labels": dict(LABELS),
            "annotations": {"costgate.io/max-runtime": "1h"},
        },
        "spec": {
            "activeDeadlineSeconds": 60,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": H100,
                    "containers": [container],
                    **pod_spec_extra,
                }
            },
        },
    }


def workflow(patch: str) -> dict[str, Any]:
    """A labelled Workflow of one H100 step, 1h declared, with `patch` as its podSpecPatch."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": "wf",
            "namespace": "team-a",
            "labels": dict(LABELS),
            "annotations": {"costgate.io/max-runtime": "1h"},
        },
        "spec": {
            "entrypoint": "train",
            "podSpecPatch": patch,
            "templates": [
                {
                    "name": "train",
                    "nodeSelector": H100,
                    "container": {
                        "image": "busybox",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    },
                }
            ],
        },
    }


# --- the cap ----------------------------------------------------------------------------


def test_a_month_of_grace_after_a_one_minute_deadline_is_denied(
    default: AdmissionService,
) -> None:
    """The issue's pod: activeDeadlineSeconds 60, terminationGracePeriodSeconds 2,592,000
    and a preStop hook that sleeps. Priced for 60 s it passed at $0.92; the kubelet keeps
    its 8 H100s for a month. Denied for the grace period, whatever the price."""
    obj = lingering_pod(MONTH, runtime="1m")
    obj["spec"]["activeDeadlineSeconds"] = 60
    response = answer(default, obj)
    assert (response["allowed"], codes(response)) == (False, {"runtime-too-long"})


def test_the_denial_names_the_grace_period_the_cap_and_the_way_through(
    default: AdmissionService,
) -> None:
    response = answer(default, lingering_pod(MONTH))
    assert response["status"]["message"] == (
        'GPU pod "job" asks for terminationGracePeriodSeconds "2592000", above the 300 s a GPU '
        'pod may keep its GPUs after its deadline in namespace "team-a" (policy '
        "max_grace_seconds); set terminationGracePeriodSeconds to at most 300 and keep "
        "preStop hooks within it"
    )


def test_a_job_template_grace_period_above_the_cap_is_denied(default: AdmissionService) -> None:
    """The Job's deadline deletes its pods, which then take their grace period too."""
    response = answer(default, job({"terminationGracePeriodSeconds": MONTH}))
    assert codes(response) == {"runtime-too-long"}


def test_a_workflow_pod_spec_patch_grace_period_above_the_cap_is_denied(
    default: AdmissionService,
) -> None:
    """Argo templates have no grace period field; a podSpecPatch sets it on every pod."""
    patch = json.dumps({"terminationGracePeriodSeconds": MONTH})
    response = answer(default, workflow(patch))
    assert codes(response) == {"runtime-too-long"}


def test_max_grace_seconds_in_the_policy_raises_the_cap() -> None:
    response = answer(served(max_grace_seconds=3600), lingering_pod(1800, gpus=1))
    assert response["allowed"]


# --- the price ----------------------------------------------------------------------------


def test_a_grace_period_within_the_cap_is_priced_after_the_runtime(
    default: AdmissionService,
) -> None:
    """8 × $6.88/h × (1h + 300 s) = $55.04 × 13/12 = $59.63 (was $55.04: the grace free)."""
    response = answer(default, lingering_pod(300))
    assert response["auditAnnotations"]["estimated-cost-usd"] == "59.63"


def test_the_estimate_says_the_grace_period_it_prices(default: AdmissionService) -> None:
    response = answer(default, lingering_pod(300))
    assert response["auditAnnotations"]["estimate"] == (
        "$59.63 (8 × h100-80gb at $6.88/h × (1h + 5m grace))"
    )


def test_a_job_prices_its_pods_grace_period() -> None:
    """1 × $6.88/h × (1m + 10m) = $1.26; the Job's deadline of 60 s is kept (was $0.11)."""
    response = answer(served(max_grace_seconds=600), job({"terminationGracePeriodSeconds": 600}))
    assert response["auditAnnotations"]["estimated-cost-usd"] == "1.26"


def test_a_workflow_prices_its_pods_grace_period() -> None:
    """Peak $6.88/h × (1h + 10m) = $8.03 (was $6.88)."""
    patch = json.dumps({"terminationGracePeriodSeconds": 600})
    response = answer(served(max_grace_seconds=600), workflow(patch))
    assert response["auditAnnotations"]["estimated-cost-usd"] == "8.03"


# --- costgate estimate agrees ---------------------------------------------------------------


def test_costgate_estimate_prices_the_grace_period_as_the_server_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], default: AdmissionService
) -> None:
    obj = lingering_pod(300)
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(obj))
    main(["estimate", "-f", str(manifest), "-o", "json"])
    row = json.loads(capsys.readouterr().out)[0]
    server = answer(default, obj)["auditAnnotations"]["estimated-cost-usd"]
    assert (row["cost_usd"], server) == (59.63, "59.63")


def test_costgate_estimate_denies_a_grace_period_above_the_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(lingering_pod(MONTH)))
    code = main(["estimate", "-f", str(manifest), "-o", "json"])
    row = json.loads(capsys.readouterr().out)[0]
    assert (code, [r["code"] for r in row["reasons"]]) == (1, ["runtime-too-long"])


# --- updates and serving ----------------------------------------------------------------------


def cronjob(grace: int) -> dict[str, Any]:
    """A labelled CronJob whose runs are the Job above, with `grace` in its pod template."""
    spec = job({"terminationGracePeriodSeconds": grace})
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": spec["metadata"],
        "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": spec["spec"]}},
    }


def test_a_cronjob_update_raising_the_grace_period_is_denied(default: AdmissionService) -> None:
    """A CronJob's jobTemplate is mutable: admitted with 30 s, then edited to a month."""
    old = cronjob(30)
    assert answer(default, old)["allowed"]
    body = json.loads(review(cronjob(MONTH), operation="UPDATE"))
    body["request"]["oldObject"] = old
    doc = json.loads(default.handle(json.dumps(body).encode(), "validate").body)
    assert codes(doc["response"]) == {"runtime-too-long"}


def test_a_serving_pod_may_drain_for_longer_than_the_cap(default: AdmissionService) -> None:
    """A ReplicaSet's pod (made by its controller) has no deadline to outlive and is priced
    per month: its grace period is not held to max_grace_seconds."""
    obj = lingering_pod(MONTH, gpus=1)
    obj["spec"]["nodeSelector"] = T4  # $714/month, under the $2,000 serving threshold
    obj["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "rs",
            "uid": "u",
            "controller": True,
        }
    ]
    body = json.loads(review(obj))
    body["request"]["userInfo"] = {
        "username": "system:serviceaccount:kube-system:replicaset-controller"
    }
    doc = json.loads(default.handle(json.dumps(body).encode(), "validate").body)
    assert doc["response"]["allowed"]
