"""Templates in other objects: workflowTemplateRef, templateRef to a WorkflowTemplate or a
ClusterWorkflowTemplate, given alongside (the CLI) or looked up (the webhook)."""

from __future__ import annotations

import pytest

from tests.support.builders import request
from tests.support.config import policy_with
from tests.support.workflows import (
    A100,
    DAY,
    H100,
    call,
    codes,
    gpu,
    patched,
    rate,
    steps,
    submit,
    workflow,
    workflow_template,
)
from webhook.core.engine import Config, evaluate
from webhook.estimate import estimate_rows

SWEEP = workflow_template(
    "sweep",
    {
        "entrypoint": "main",
        "templates": [steps("main", [call("t", "train", withItems=[1, 2, 3])]), gpu("train", 2)],
    },
)


def test_a_workflow_template_ref_is_priced_from_the_template_given_alongside(wide) -> None:
    # peak: 3 items × 2 × a100 × 12h; with the Workflow's own parallelism 1: 1 × 2 × a100 × 12h
    plain = submit({"workflowTemplateRef": {"name": "sweep"}}, "plain")
    capped = submit({"workflowTemplateRef": {"name": "sweep"}, "parallelism": 1}, "capped")
    rows = {row["name"]: row for row in estimate_rows([SWEEP, plain, capped], config=wide)}
    a100 = rate(wide)(A100)
    assert rows["plain"]["allowed"] and rows["plain"]["reasons"] == []
    assert rows["plain"]["cost_usd"] == pytest.approx(3 * 2 * a100 * DAY, abs=0.005)
    assert rows["capped"]["cost_usd"] == pytest.approx(1 * 2 * a100 * DAY, abs=0.005)
    assert rows["sweep"]["allowed"] and rows["sweep"]["kind"] == "WorkflowTemplate"


def test_a_workflow_template_ref_not_given_is_template_not_found(wide) -> None:
    rows = estimate_rows([submit({"workflowTemplateRef": {"name": "sweep"}})], config=wide)
    assert not rows[0]["allowed"]
    assert [r["code"] for r in rows[0]["reasons"]] == ["template-not-found"]


def test_a_template_ref_to_a_cluster_workflow_template(wide) -> None:
    # The namespaced "gpu-lib" (8 × h100) must not be taken for the cluster-scoped one.
    # per-step: 2 items × 2 × h100 × 3h (timeout) = 12 h100-hours; peak 2 × 2 × h100 × 12h
    cluster_lib = workflow_template(
        "gpu-lib", {"templates": [gpu("train", 2, H100, timeout="3h")]}, cluster=True
    )
    namespaced_lib = workflow_template("gpu-lib", {"templates": [gpu("train", 8, H100)]})
    run = submit(
        {
            "entrypoint": "main",
            "templates": [
                steps(
                    "main",
                    [
                        {
                            "name": "t",
                            "templateRef": {
                                "name": "gpu-lib",
                                "template": "train",
                                "clusterScope": True,
                            },
                            "withItems": ["a", "b"],
                        }
                    ],
                )
            ],
        }
    )
    rows = estimate_rows([namespaced_lib, cluster_lib, run], config=wide)
    row = rows[-1]
    h100 = rate(wide)(H100)
    assert row["allowed"] and row["reasons"] == []
    assert row["cost_usd"] == pytest.approx(min(2 * 2 * h100 * 3, 2 * 2 * h100 * DAY), abs=0.005)
    assert "train: 2 × h100-80gb" in row["warnings"][0]


def test_a_hook_calling_a_template_of_a_workflow_template_is_priced(wide) -> None:
    # like the same hook with `template:`: peak (1 + 4) × a100 × 12h
    lib = workflow_template("lib", {"templates": [gpu("notify", 4)]})
    hook = {"exit": {"templateRef": {"name": "lib", "template": "notify"}}}
    run = workflow(steps("main", [call("t", "train", hooks=hook)]), gpu("train", 1))
    row = estimate_rows([lib, run], config=wide)[-1]
    assert row["cost_usd"] == pytest.approx((1 + 4) * rate(wide)(A100) * DAY, abs=0.005)


def test_a_template_ref_not_given_is_template_not_found(wide) -> None:
    run = workflow(
        steps("main", [{"name": "t", "templateRef": {"name": "lib", "template": "train"}}])
    )
    decision = evaluate(request(run), config=wide)
    assert not decision.allowed
    assert codes(decision) == ["template-not-found"]


def test_a_workflow_template_deadline_is_kept_under_a_workflow_template_ref(table) -> None:
    template = workflow_template(
        "short", {"entrypoint": "g", "activeDeadlineSeconds": 3600, "templates": [gpu("g", 1)]}
    )
    specs = {("team-a", "short", False): template["spec"]}
    config = Config(
        table,
        policy_with(threshold_usd=1e9),
        lookup=lambda ns, name, cluster: specs.get((ns, name, cluster)),
    )
    run = submit({"workflowTemplateRef": {"name": "short"}})
    decision = evaluate(request(run), config=config)
    # The template stops the run after 1h; the Workflow's own field would win over it, so
    # none is written.
    assert decision.runtime_seconds == 3600
    assert "activeDeadlineSeconds" not in patched(decision, run)["spec"]
