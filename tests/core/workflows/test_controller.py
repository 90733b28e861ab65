"""What the workflow controller makes is not priced again (pods) or not gated again (the
Workflows of CronWorkflows, charged run by run); the same objects made by a person, or by a
workflow's resource template, are."""

from __future__ import annotations

from typing import Any

from tests.support.builders import pod, request
from tests.support.workflows import (
    ARGO_SA,
    codes,
    gpu,
    owned_by,
    workflow,
)
from webhook.core.engine import evaluate


def argo_pod() -> dict[str, Any]:
    return owned_by(pod(gpus=8, labels={}), "Workflow")


def test_pods_the_workflow_controller_makes_are_not_priced_again(strict) -> None:
    decision = evaluate(request(argo_pod(), username=ARGO_SA), config=strict)
    assert decision.allowed and not decision.priced and decision.deadline is None


def test_a_person_creating_a_workflow_owned_pod_is_priced_like_any_pod(strict) -> None:
    claimed = evaluate(request(argo_pod(), username="mallory"), config=strict)
    plain = evaluate(request(pod(gpus=8, labels={}), username="mallory"), config=strict)
    assert not claimed.allowed
    assert codes(claimed) == codes(plain) == ["missing-labels", "over-threshold"]
    assert claimed.estimate.usd == plain.estimate.usd


def test_workflows_a_cronworkflow_makes_are_priced_as_runs_not_gated_again(strict) -> None:
    # gated per month with the CronWorkflow; each run is priced and charged, and must carry
    # the attribution costgate copied into workflowMetadata
    obj = owned_by(workflow(gpu("main", 8)), "CronWorkflow")
    decision = evaluate(request(obj, username=ARGO_SA), config=strict)
    assert decision.allowed and decision.priced
    assert decision.estimate.usd > strict.policy.default.threshold_usd
    unlabelled = owned_by(workflow(gpu("main", 8), labels={}), "CronWorkflow")
    assert codes(evaluate(request(unlabelled, username=ARGO_SA), config=strict)) == [
        "missing-labels"
    ]


def test_a_workflow_a_workflow_makes_is_priced(strict) -> None:
    # workflow-of-workflows: a resource template creates a Workflow; Workflow owners create Pods
    obj = owned_by(workflow(gpu("main", 8), labels={}), "Workflow")
    decision = evaluate(request(obj, username=ARGO_SA), config=strict)
    assert decision.priced
    assert "missing-labels" in codes(decision)


def test_a_job_a_workflow_makes_is_priced(strict) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "child", "namespace": "team-a"},
        "spec": {"template": {"spec": pod(gpus=8)["spec"]}},
    }
    decision = evaluate(request(owned_by(job, "Workflow"), username=ARGO_SA), config=strict)
    assert not decision.allowed and decision.priced
    assert codes(decision) == ["missing-labels", "over-threshold"]
