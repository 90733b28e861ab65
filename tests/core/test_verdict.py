"""verdict: what the rules found -> one answer, its outcome computed once; a refusal found
after the core goes through the same verdict; the mutating webhook's own answer."""

from __future__ import annotations

from tests.support.builders import pod, request
from tests.support.config import policy_with
from webhook.core import messages
from webhook.core.engine import Config, evaluate, mutate
from webhook.core.rules.context import Context
from webhook.core.types import Reason, Request
from webhook.core.usage import Totals
from webhook.core.verdict import Decision, Findings, refused, with_warning

BUDGET = {"budget": {"usd": 1000}}
T4 = {"costgate.io/gpu-type": "t4"}  # cheap enough to pass the threshold
# the annotation counts where a nodeSelector allows its type (gpu_type_annotation: checked)
ON_T4 = {"nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"}}
LATE = Reason("over-budget", "another replica spent the budget first")


def warn_config(table) -> Config:
    return Config(table, policy_with(mode="warn"))


def budget_config(table, **extra) -> Config:
    return Config(table, policy_with(**BUDGET, **extra))


def budgeted(table):
    """A cheap GPU pod admitted under a budget: it holds usage and a charge."""
    return evaluate(
        request(pod(annotations=T4, spec=ON_T4)), config=budget_config(table), state=_Spent()
    )


class _Spent:
    """A UsageView with nothing running and nothing spent."""

    def namespace_totals(self, namespace):
        return Totals()

    def owner_totals(self, namespace, owner):
        return Totals()

    def spent(self, namespace, experiment, period):
        return 0.0

    def allowance_use(self, namespace, jti):
        return {}


def test_a_pod_without_gpus_is_skipped_with_nothing_to_audit(config) -> None:
    decision = evaluate(request(pod(gpus=None)), config=config)
    assert (decision.outcome, decision.allowed, dict(decision.audit)) == ("skip", True, {})


def test_a_priced_gpu_pod_is_allowed_stamped_and_audited(config) -> None:
    decision = evaluate(request(pod(gpus=1, annotations=T4, spec=ON_T4)), config=config)
    assert decision.outcome == "allow"
    assert decision.stamp == f"{decision.estimate.usd:.2f}"
    assert decision.audit["decision"] == "allow"


def test_a_denial_reads_as_every_reason_in_one_sentence(config) -> None:
    decision = evaluate(request(pod(labels={})), config=config)
    assert decision.outcome == "deny"
    assert decision.denial == messages.denial(decision.reasons)
    assert decision.deadline is None and decision.stamp is None


def test_warn_mode_admits_and_says_what_enforce_would_deny(table) -> None:
    decision = evaluate(request(pod(labels={})), config=warn_config(table))
    assert (decision.outcome, decision.allowed, decision.denial) == ("warn", True, "")
    expected = messages.would_deny("missing-labels", decision.reasons[0].message)
    assert expected in decision.warnings


def test_a_refusal_after_the_core_goes_through_the_verdict(table) -> None:
    admitted = budgeted(table)
    assert admitted.allowed and admitted.charge is not None and admitted.usage is not None
    decision = refused(admitted, LATE)
    assert decision.outcome == "deny"
    assert decision.reasons[-1] == LATE
    assert decision.audit["decision"] == "deny" and decision.audit["reasons"] == "over-budget"
    assert decision.warnings == ()
    assert (decision.deadline, decision.stamp, decision.usage, decision.charge) == (None,) * 4
    assert decision.denial == messages.denial((LATE,))


def test_a_refusal_denies_in_warn_mode_too(table) -> None:
    config = budget_config(table, mode="warn")
    admitted = evaluate(
        request(pod(labels={}, annotations=T4, spec=ON_T4)), config=config, state=_Spent()
    )
    assert admitted.outcome == "warn"
    decision = refused(admitted, LATE)
    assert decision.outcome == "deny"
    assert [r.code for r in decision.reasons] == ["missing-labels", "over-budget"]
    assert decision.audit["reasons"] == "missing-labels,over-budget"


def test_admitted_unrecorded_says_so_last_and_charges_nothing(table) -> None:
    admitted = budgeted(table)
    decision = with_warning(admitted, "costgate: not recorded")
    assert decision.outcome == "allow"
    assert decision.warnings == (*admitted.warnings, "costgate: not recorded")
    assert decision.charge is None and decision.usage == admitted.usage


def test_an_unreadable_object_is_refused_400_even_in_warn_mode(table) -> None:
    obj = pod(spec={"containers": "not a list"})
    decision = evaluate(request(obj), config=warn_config(table))
    assert (decision.outcome, decision.status_code) == ("deny", 400)
    assert decision.audit == {"decision": "deny", "reasons": "invalid-request"}


def test_stripping_labels_in_warn_mode_warns(table) -> None:
    old = pod(spec={"activeDeadlineSeconds": 3600})
    new = pod(labels={}, spec={"activeDeadlineSeconds": 3600})
    decision = evaluate(request(new, operation="UPDATE", old=old), config=warn_config(table))
    assert decision.outcome == "warn"
    assert any("would be denied in enforce mode (missing-labels)" in w for w in decision.warnings)


def test_mutate_refuses_only_what_it_cannot_read(config) -> None:
    obj = pod(annotations={"costgate.io/max-runtime": "soon"})
    answer = mutate(request(obj), config=config)
    assert answer.outcome == "deny"
    assert answer.refusal is not None and answer.refusal.reasons[0].code == "invalid-runtime"


def test_mutate_leaves_policy_denials_to_validate(config) -> None:
    obj = pod(labels={})
    answer = mutate(request(obj), config=config)
    assert (answer.outcome, answer.allowed, answer.ops) == ("skip", True, ())


def test_mutate_patches_what_is_admitted(config) -> None:
    obj = pod(gpus=1, annotations=T4, spec=ON_T4)
    answer = mutate(request(obj), config=config)
    assert answer.outcome == "patch"
    assert {"op": "add", "path": "/spec/activeDeadlineSeconds", "value": 12 * 3600} in answer.ops


def test_a_refusal_after_the_core_is_audited_last(table) -> None:
    # the audit log reads in the order things were found: the rules' reasons beside the
    # workload, a refusal by the state after the estimate
    decision = refused(budgeted(table), LATE)
    assert list(decision.audit) == [
        "decision",
        "workload",
        "estimated-cost-usd",
        "estimate",
        "reasons",
    ]


def test_the_rules_reasons_are_audited_beside_the_workload(config) -> None:
    decision = evaluate(request(pod(labels={}, annotations=T4, spec=ON_T4)), config=config)
    assert list(decision.audit)[:3] == ["decision", "workload", "reasons"]


# Findings, Decision, Context and Request are built positionally on the hot path
# (decide.assess, verdict.verdict, engine.context_for, admission.parse_review): a field
# moved or added in the middle would shift values into the wrong fields, so the orders
# those calls rely on are pinned here.
PINNED = {
    Findings: (
        "workload mode reasons refusals status_code warnings if_admitted assessed estimate "
        "cost_text runtime_seconds deadline approval usage charge pod_labels pod_annotations "
        "kept_stamp audit allowance"
    ),
    Decision: (
        "outcome allowed findings workload estimate runtime_seconds mode reasons warnings "
        "denial status_code audit deadline stamp pod_labels pod_annotations usage charge "
        "allowance"
    ),
    Context: ("workload policy table hours_per_month verify now skew requester state entry credit"),
    Request: (
        "uid operation group kind namespace name obj old_obj username groups dry_run extra "
        "resource sub_resource"
    ),
}


def test_the_positional_constructions_match_the_field_order() -> None:
    assert {cls: " ".join(cls._fields) for cls in PINNED} == PINNED
