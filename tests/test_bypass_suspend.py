"""A suspended Job resumed is a new run (issue #13, item 5).

Kubernetes resets a Job's activeDeadlineSeconds timer when the Job is resumed, so each resume
can spend the whole estimate again. UPDATE `suspend: true` -> `false` was allowed any number
of times with no price and no charge; a resume is now decided like a create (labels, the cost
gate, quotas and budgets). A suspended Job runs no pod: it holds and spends nothing until it
is resumed, so a Job created suspended (as Kueue creates them) is charged when it starts.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.support.builders import H100, LABELS
from tests.support.services import service_for
from webhook.core.config import Config
from webhook.core.holding import holding
from webhook.service import AdmissionService
from webhook.tables import load_config

RUN = 34.40  # 1 × h100 ($6.88/h) × 5h


def job(*, suspend: bool, name: str = "train") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": H100,
                "containers": [
                    {"name": "main", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                ],
            }
        },
    }
    if suspend:
        spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": f"uid-{name}",
            "labels": dict(LABELS),
            "annotations": {"costgate.io/max-runtime": "5h"},
        },
        "spec": spec,
    }


_reviews = iter(range(10**6))


def send(service: AdmissionService, obj: dict[str, Any], old: dict[str, Any] | None = None):
    """/validate's response for a CREATE of `obj`, or an UPDATE from `old` to it."""
    request: dict[str, Any] = {
        "uid": f"review-{next(_reviews)}",
        "kind": {"group": "batch", "version": "v1", "kind": "Job"},
        "resource": {"group": "batch", "version": "v1", "resource": "jobs"},
        "namespace": "team-a",
        "name": obj["metadata"]["name"],
        "operation": "UPDATE" if old is not None else "CREATE",
        "userInfo": {"username": "alice"},
        "object": obj,
    }
    if old is not None:
        request["oldObject"] = old
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    result = service.handle(orjson.dumps(body), "validate")
    assert result.status == 200
    return orjson.loads(result.body)["response"]


def test_each_resume_is_charged_like_a_new_run() -> None:
    service, state = service_for(budget={"usd": 80})
    running, suspended = job(suspend=False), job(suspend=True)
    assert send(service, running)["allowed"]
    assert send(service, suspended, old=running)["allowed"]  # suspending spends nothing
    assert state.spent("team-a", "exp-1", "lifetime") == pytest.approx(RUN)
    assert send(service, running, old=suspended)["allowed"]
    assert state.spent("team-a", "exp-1", "lifetime") == pytest.approx(2 * RUN)


def test_a_resume_past_the_budget_is_denied() -> None:
    # $34.40 a run, a budget of $80: the create and one resume fit, the second resume not
    service, _ = service_for(budget={"usd": 80})
    running, suspended = job(suspend=False), job(suspend=True)
    send(service, running)
    send(service, suspended, old=running)
    send(service, running, old=suspended)
    send(service, suspended, old=running)
    denied = send(service, running, old=suspended)
    assert not denied["allowed"]
    assert denied["auditAnnotations"]["reasons"] == "over-budget"


def test_a_job_created_suspended_is_charged_when_it_starts() -> None:
    service, state = service_for(budget={"usd": 80})
    suspended, running = job(suspend=True), job(suspend=False)
    created = send(service, suspended)
    assert created["allowed"]
    assert state.spent("team-a", "exp-1", "lifetime") == 0
    assert state.namespace_totals("team-a").workloads == 0
    assert send(service, running, old=suspended)["allowed"]
    assert state.spent("team-a", "exp-1", "lifetime") == pytest.approx(RUN)


def test_a_job_created_suspended_is_still_priced_and_gated() -> None:
    # the user learns at `kubectl apply` what it will cost, and a denial comes then
    service, _ = service_for(threshold_usd=10)
    created = send(service, job(suspend=True))
    assert not created["allowed"]
    assert created["auditAnnotations"]["reasons"] == "over-threshold"


def test_a_suspended_job_holds_nothing_in_quotas() -> None:
    config: Config = load_config()
    assert holding("batch", "Job", job(suspend=True), config) is None
    running = holding("batch", "Job", job(suspend=False), config)
    assert running is not None and running.gpus == 1
