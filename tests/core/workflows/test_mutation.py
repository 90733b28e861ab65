"""What the mutating webhook writes into Workflows, CronWorkflows and WorkflowTemplates: the
deadline, the labels and annotations their pods inherit, the estimate stamp."""

from __future__ import annotations

import copy

import pytest

from tests.support.builders import LABELS, request
from tests.support.workflows import (
    A100,
    DAY,
    H100,
    T4,
    codes,
    cron,
    gpu,
    money,
    patched,
    rate,
    workflow,
    workflow_template,
)
from webhook.core import messages
from webhook.core.engine import evaluate
from webhook.core.patch import patch_ops


def test_a_workflow_gets_the_default_deadline_and_its_labels_in_pod_metadata(wide) -> None:
    obj = workflow(gpu("main", 1))
    decision = evaluate(request(obj), config=wide)
    expected = copy.deepcopy(obj)
    expected["spec"]["activeDeadlineSeconds"] = 12 * 3600
    expected["spec"]["podMetadata"] = {"labels": LABELS}
    expected["metadata"]["annotations"] = {"costgate.io/estimated-cost": decision.stamp}
    assert patched(decision, obj) == expected
    assert decision.stamp == f"{rate(wide)(A100) * DAY:.2f}"


def test_a_smaller_workflow_deadline_is_kept(wide) -> None:
    obj = workflow(gpu("main", 1), spec={"activeDeadlineSeconds": 1800})
    decision = evaluate(request(obj), config=wide)
    assert decision.runtime_seconds == 1800
    assert patched(decision, obj)["spec"]["activeDeadlineSeconds"] == 1800
    assert decision.estimate.usd == pytest.approx(rate(wide)(A100) * 0.5, abs=0.005)


def test_a_larger_workflow_deadline_is_lowered_to_the_declared_runtime(wide) -> None:
    obj = workflow(
        gpu("main", 1),
        spec={"activeDeadlineSeconds": 86400},
        annotations={"costgate.io/max-runtime": "3h"},
    )
    decision = evaluate(request(obj), config=wide)
    assert patched(decision, obj)["spec"]["activeDeadlineSeconds"] == 3 * 3600


def test_existing_pod_metadata_keeps_its_labels_and_gains_attribution(wide) -> None:
    annotations = {
        "costgate.io/max-runtime": "2h",
        "costgate.io/gpu-type": A100,
        "costgate.io/estimated-cost": "1.00",  # the stamp is the workflow's, not its pods'
        "team.example/notes": "not costgate's",
    }
    obj = workflow(
        gpu("main", 1),
        annotations=annotations,
        labels={**LABELS, "tier": "gold"},
        spec={"podMetadata": {"labels": {"app": "trainer", "owner": "someone-else"}}},
    )
    decision = evaluate(request(obj), config=wide)
    expected = copy.deepcopy(obj)
    expected["spec"]["activeDeadlineSeconds"] = 7200
    expected["spec"]["podMetadata"] = {
        "labels": {"app": "trainer", **LABELS},  # only the required labels are copied
        "annotations": {"costgate.io/max-runtime": "2h", "costgate.io/gpu-type": A100},
    }
    expected["metadata"]["annotations"]["costgate.io/estimated-cost"] = decision.stamp
    assert decision.stamp == f"{rate(wide)(A100) * 2:.2f}"
    assert patched(decision, obj) == expected


def test_absent_pod_metadata_gets_both_labels_and_costgate_annotations(wide) -> None:
    # Two `add /spec/podMetadata` ops (labels, then annotations) would keep only the last.
    obj = workflow(gpu("main", 1), annotations={"costgate.io/max-runtime": "3h"})
    decision = evaluate(request(obj), config=wide)
    expected = copy.deepcopy(obj)
    expected["spec"]["activeDeadlineSeconds"] = 3 * 3600
    expected["spec"]["podMetadata"] = {
        "labels": LABELS,
        "annotations": {"costgate.io/max-runtime": "3h"},
    }
    expected["metadata"]["annotations"]["costgate.io/estimated-cost"] = decision.stamp
    assert patched(decision, obj) == expected


def test_a_cronworkflow_gets_its_deadline_and_labels_in_the_workflows_it_makes(wide) -> None:
    # workflowMetadata present (with a label of its own), podMetadata present: no op replaces
    obj = cron(
        workflow(
            gpu("main", 2),
            annotations={"costgate.io/max-runtime": "6h"},
            spec={"podMetadata": {"labels": {"app": "eval"}}},
        ),
        workflow_metadata={"labels": {"schedule": "nightly"}},
    )
    decision = evaluate(request(obj), config=wide)
    assert decision.allowed
    # one run: 2 × a100 × 6h; nightly, one at a time, about 30.4 runs a month
    one_run = 2 * rate(wide)(A100) * 6
    assert decision.estimate.run.usd == pytest.approx(one_run, abs=0.005)
    assert decision.estimate.usd == pytest.approx(decision.estimate.run.usd * 730 / 24, abs=0.01)
    expected = copy.deepcopy(obj)
    expected["spec"]["workflowSpec"]["activeDeadlineSeconds"] = 6 * 3600
    expected["spec"]["workflowSpec"]["podMetadata"] = {
        "labels": {"app": "eval", **LABELS},
        "annotations": {"costgate.io/max-runtime": "6h"},
    }
    expected["spec"]["workflowMetadata"] = {
        "labels": {"schedule": "nightly", **LABELS},
        "annotations": {"costgate.io/max-runtime": "6h"},
    }
    expected["metadata"]["annotations"]["costgate.io/estimated-cost"] = decision.stamp
    assert patched(decision, obj) == expected


def test_a_cronworkflow_without_metadata_templates_gets_its_labels(wide) -> None:
    obj = cron(workflow(gpu("main", 1)))
    decision = evaluate(request(obj), config=wide)
    expected = copy.deepcopy(obj)
    expected["spec"]["workflowSpec"]["activeDeadlineSeconds"] = 12 * 3600
    expected["spec"]["workflowSpec"]["podMetadata"] = {"labels": LABELS}
    expected["spec"]["workflowMetadata"] = {"labels": LABELS}
    expected["metadata"]["annotations"] = {"costgate.io/estimated-cost": decision.stamp}
    assert patched(decision, obj) == expected


def test_a_cronworkflow_with_annotations_and_no_metadata_templates_gets_both(wide) -> None:
    obj = cron(workflow(gpu("main", 1), annotations={"costgate.io/gpu-type": A100}))
    decision = evaluate(request(obj), config=wide)
    copied = {"labels": LABELS, "annotations": {"costgate.io/gpu-type": A100}}
    result = patched(decision, obj)
    assert result["spec"]["workflowSpec"]["podMetadata"] == copied
    assert result["spec"]["workflowMetadata"] == copied


def test_a_cronworkflow_labelled_through_workflow_metadata_is_attributed(strict) -> None:
    obj = cron(workflow(gpu("main", 1, T4), labels={}), workflow_metadata={"labels": LABELS})
    decision = evaluate(request(obj), config=strict)
    assert decision.allowed and codes(decision) == []


def test_a_workflow_template_without_labels_is_denied(strict) -> None:
    obj = workflow_template("lib", {"entrypoint": "g", "templates": [gpu("g", 1, T4)]})
    obj["metadata"]["labels"] = {"owner": "alice"}
    decision = evaluate(request(obj), config=strict)
    assert not decision.allowed
    assert codes(decision) == ["missing-labels"]
    assert "experiment" in decision.reasons[0].message


def test_a_workflow_template_is_priced_for_information_only(strict) -> None:
    # 8 × h100 × 12h is far above $100: a template is not gated, its Workflows are
    obj = workflow_template("lib", {"entrypoint": "g", "templates": [gpu("g", 8, H100)]})
    decision = evaluate(request(obj), config=strict)
    cost = 8 * rate(strict)(H100) * DAY
    assert decision.allowed and codes(decision) == []
    assert decision.estimate.usd == pytest.approx(cost, abs=0.005)
    assert decision.warnings == (
        f"costgate: a workflow of this template would cost up to {money(cost)} "
        f"(up to {money(cost / DAY)}/h at once × 12h; g: 8 × h100-80gb at "
        f"{money(rate(strict)(H100))}/h), above the $100.00 threshold",
        # no live Workflows to price an edit against here (the cluster's webhook has them)
        f"costgate: {messages.template_users_unseen()}",
    )
    assert patch_ops(decision, obj) == []
