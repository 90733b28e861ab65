"""Jobs and CronJobs: priced where users submit them, their pods not priced twice."""

from __future__ import annotations

import copy

import jsonpatch
import pytest

from tests.support.builders import LABELS, container, pod, request
from tests.support.config import policy_with
from webhook.core.engine import Config, evaluate
from webhook.core.patch import patch_ops

T4 = {"costgate.io/gpu-type": "t4"}
# the annotation counts where a nodeSelector allows its type (gpu_type_annotation: checked)
T4_NODES = {"nvidia.com/gpu.product": "Tesla-T4"}
JOB_SA = "system:serviceaccount:kube-system:job-controller"


def job(
    *,
    gpus=1,
    parallelism=None,
    completions=None,
    labels=None,
    template_labels=None,
    annotations=None,
    spec=None,
):
    job_spec = {
        "template": {
            "metadata": {"labels": template_labels} if template_labels is not None else {},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": dict(T4_NODES),
                "containers": [container(limits={"nvidia.com/gpu": str(gpus)})],
            },
        }
    }
    if parallelism is not None:
        job_spec["parallelism"] = parallelism
    if completions is not None:
        job_spec["completions"] = completions
    job_spec.update(spec or {})
    metadata = {
        "name": "batch",
        "namespace": "team-a",
        "labels": dict(LABELS) if labels is None else labels,
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def cronjob(**kw):
    inner = job(**kw)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": inner["metadata"],
        "spec": {"schedule": "0 2 * * *", "jobTemplate": {"metadata": {}, "spec": inner["spec"]}},
    }


@pytest.mark.parametrize(
    ("parallelism", "completions", "concurrent"),
    [(None, None, 1), (4, None, 4), (4, 8, 4), (8, 3, 3), (0, 5, 0)],
    ids=[
        "one pod by default",
        "parallelism pods at once",
        "completions above parallelism",
        "never more pods than completions",
        "a suspended-like zero parallelism",
    ],
)
def test_job_cost_counts_concurrent_pods(parallelism, completions, concurrent, config) -> None:
    obj = job(parallelism=parallelism, completions=completions, annotations=T4)
    decision = evaluate(request(obj), config=config)
    t4 = config.table.gpus["t4"].usd_per_hour
    assert decision.estimate is not None
    assert decision.estimate.usd == round(concurrent * t4 * 12, 2)


def test_job_deadline_and_labels_are_patched_into_the_job(table) -> None:
    config = Config(table, policy_with(threshold_usd=10_000))
    obj = job(parallelism=2, annotations={**T4, "costgate.io/max-runtime": "3h"})
    decision = evaluate(request(obj), config=config)
    assert decision.allowed
    result = jsonpatch.apply_patch(copy.deepcopy(obj), patch_ops(decision, obj))
    assert result["spec"]["activeDeadlineSeconds"] == 3 * 3600
    template = result["spec"]["template"]["metadata"]
    assert template["labels"] == LABELS
    assert template["annotations"] == {**T4, "costgate.io/max-runtime": "3h"}
    assert result["metadata"]["annotations"]["costgate.io/estimated-cost"] == decision.stamp


def test_cronjob_deadline_goes_into_the_job_template(table) -> None:
    config = Config(table, policy_with(threshold_usd=10_000))
    obj = cronjob(annotations=T4)
    decision = evaluate(request(obj), config=config)
    result = jsonpatch.apply_patch(copy.deepcopy(obj), patch_ops(decision, obj))
    job_spec = result["spec"]["jobTemplate"]["spec"]
    assert job_spec["activeDeadlineSeconds"] == 43200
    assert job_spec["template"]["metadata"]["labels"] == LABELS


def test_labels_on_the_pod_template_attribute_the_job(config) -> None:
    decision = evaluate(
        request(job(labels={}, template_labels=LABELS, annotations=T4)), config=config
    )
    assert "missing-labels" not in [r.code for r in decision.reasons]


def test_a_job_without_labels_anywhere_is_denied(config) -> None:
    decision = evaluate(request(job(labels={}, annotations=T4)), config=config)
    assert [r.code for r in decision.reasons] == ["missing-labels"]
    assert 'GPU job "batch"' in decision.reasons[0].message


def test_a_cpu_job_is_untouched(config) -> None:
    obj = job(labels={})
    obj["spec"]["template"]["spec"]["containers"] = [container(limits={"cpu": "1"})]
    decision = evaluate(request(obj), config=config)
    assert decision.allowed and not decision.priced


JOB_OWNER = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "name": "batch",
    "uid": "u",
    "controller": True,
}


def test_job_pods_made_by_the_job_controller_are_not_priced_again(config) -> None:
    decision = evaluate(
        request(pod(gpus=8, labels={}, owner=JOB_OWNER), username=JOB_SA), config=config
    )
    assert decision.allowed and not decision.priced and decision.deadline is None


def test_a_person_claiming_a_job_owner_is_priced_like_any_pod(config) -> None:
    decision = evaluate(
        request(pod(gpus=8, labels={}, owner=JOB_OWNER), username="mallory"), config=config
    )
    assert not decision.allowed
    assert "missing-labels" in [r.code for r in decision.reasons]


def test_jobs_a_cronjob_makes_are_priced_as_one_run_but_not_gated_again(config) -> None:
    # the CronJob was gated per month when it was submitted; each run is priced (and charged
    # to its budget: tests/test_bypass_cron.py), not held to the per-run threshold again
    owner = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": "nightly",
        "uid": "u",
        "controller": True,
    }
    obj = job(gpus=8, labels=dict(LABELS), annotations={"costgate.io/max-runtime": "3d"})
    obj["metadata"]["ownerReferences"] = [owner]
    decision = evaluate(
        request(obj, username="system:serviceaccount:kube-system:cronjob-controller"),
        config=config,
    )
    assert decision.allowed and decision.priced
    assert decision.estimate.usd > config.policy.default.threshold_usd
