"""Error paths and notes: an unreadable template reference, a fan-out that is not a number, an
undefined template, an unreadable podSpecPatch, a resource template."""

from __future__ import annotations

from tests.support.builders import request
from tests.support.config import policy_with
from tests.support.workflows import (
    call,
    codes,
    gpu,
    steps,
    workflow,
)
from webhook.core.engine import Config, evaluate

UNREADABLE_REF = workflow(spec={"workflowTemplateRef": {"name": "elsewhere"}, "templates": []})


def test_a_workflow_template_ref_nobody_can_read_is_denied_by_default(table) -> None:
    deny = evaluate(request(UNREADABLE_REF), config=Config(table, policy_with(threshold_usd=1e9)))
    assert codes(deny) == ["template-not-found"]
    assert 'WorkflowTemplate "elsewhere"' in deny.reasons[0].message


def test_a_workflow_template_ref_nobody_can_read_is_warned_under_unresolved_warn(table) -> None:
    warn = Config(table, policy_with(threshold_usd=1e9, unresolved_templates="warn"))
    allowed = evaluate(request(UNREADABLE_REF), config=warn)
    assert allowed.allowed and not allowed.reasons
    assert any('"elsewhere"' in w for w in allowed.warnings)


def test_a_max_fanout_that_is_not_a_number_is_refused(wide: Config) -> None:
    obj = workflow(
        steps("main", [call("t", "train", withParam="{{x}}")]),
        gpu("train", 1),
        annotations={"costgate.io/max-fanout": "lots"},
    )
    decision = evaluate(request(obj), config=wide)
    assert "invalid-gpu-request" in codes(decision)
    assert 'costgate.io/max-fanout="lots" is not a whole number' in decision.reasons[0].message


def test_a_step_calling_an_undefined_template_is_named(wide: Config) -> None:
    obj = workflow(steps("main", [call("t", "nowhere")]), gpu("train", 1))
    decision = evaluate(request(obj), config=wide)
    assert codes(decision) == ["invalid-request"]
    assert 'template "nowhere", which the workflow does not define' in decision.reasons[0].message


def test_an_unreadable_patch_naming_no_resources_is_ignored_with_a_warning(wide: Config) -> None:
    # (a `{{...}}` left in a patch is refused instead: tests/test_bypass_argo_parameters.py)
    obj = workflow(gpu("main", 1, podSpecPatch='{"priorityClassName": [high }'))
    decision = evaluate(request(obj), config=wide)
    assert decision.allowed
    assert any("podSpecPatch cannot be read" in w and "ignored" in w for w in decision.warnings)


def test_a_resource_template_says_its_object_is_priced_when_created(wide: Config) -> None:
    obj = workflow(
        steps("main", [call("t", "train")], [call("make", "job")]),
        gpu("train", 1),
        {"name": "job", "resource": {"action": "create", "manifest": "kind: Job"}},
    )
    decision = evaluate(request(obj), config=wide)
    assert decision.allowed
    assert any('template "job" creates an object' in w for w in decision.warnings)
