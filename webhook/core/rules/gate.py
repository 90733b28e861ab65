"""The cost gate: a workload dearer than its namespace's threshold needs an approval that
covers it (signed by an approver who may approve here, not by its requester or owner), with
enough of its allowance left: what one token admits is added up, across workloads."""

from __future__ import annotations

from typing import NamedTuple

from .. import messages
from ..types import ANNOTATION_APPROVAL, Approval, Estimate, Reason
from ..usage import AllowanceCharge
from .approval import check_allowance, check_approval
from .context import NOTHING, Context, Finding

__all__ = ["OPEN", "Gate", "gate", "threshold"]


class Gate(NamedTuple):
    finding: Finding
    approval: Approval | None  # the approval that lifted the gate
    cost_text: str = ""  # messages.cost(estimate), when the gate had to say it
    allowance: AllowanceCharge | None = None  # what to charge the approval once admitted


OPEN = Gate(NOTHING, None)  # under the threshold: nothing found, nothing needed


def threshold(context: Context) -> float:
    """The most a workload may cost without approval: per run, or per month for serving
    work and schedules (CronJobs, CronWorkflows: what their runs can spend in a month)."""
    policy = context.policy
    workload = context.workload
    if workload.workload_class == "serving" or workload.schedule is not None:
        return policy.serving_threshold_usd_per_month
    return policy.threshold_usd


def gate(context: Context, estimate: Estimate) -> Gate:
    limit = threshold(context)
    if estimate.usd <= limit:
        return OPEN
    cost_text = messages.cost(estimate)
    workload, policy = context.workload, context.policy
    namespace = workload.namespace
    approvals = policy.over_threshold != "deny"
    token = workload.annotations.get(ANNOTATION_APPROVAL) if approvals else None
    if not token:
        if estimate.schedule is not None:
            what = f"{workload.kind} {messages.quote(workload.display_name)}"
            text = messages.over_monthly_limit(
                what, estimate, limit, namespace, cost_text, approvals=approvals
            )
        else:
            text = messages.over_threshold(
                estimate, limit, namespace, cost_text, approvals=approvals
            )
        return Gate(Finding((Reason("over-threshold", text),)), None, cost_text)
    if context.verify is None:
        disabled = Reason("invalid-approval", messages.approvals_disabled())
        return Gate(Finding((disabled,)), None, cost_text)
    verified = (
        context.verify(token)
        if type(token) is str
        else Reason("invalid-approval", messages.approval_malformed("not a string"))
    )
    if isinstance(verified, Reason):
        return Gate(Finding((verified,)), None, cost_text)
    problems = check_approval(
        verified,
        workload=workload,
        estimate=estimate,
        policy=policy,
        now=context.now,
        skew=context.skew,
        requester=context.requester,
    )
    if problems:
        return Gate(Finding(tuple(problems)), None, cost_text)
    approved = messages.approved(verified)
    if workload.suspended or workload.workload_class != "batch":
        # A suspended Job spends nothing until resumed, and is checked again then. Serving
        # pods are priced one by one per month and replace each other (a rollout, a restart):
        # each is held to the maximum alone, or an allowance would run out with rollouts.
        return Gate(Finding(warnings=(approved,)), verified, cost_text)
    need = round(max(0.0, estimate.usd - context.credit), 2)
    what = f"{workload.kind} {messages.quote(workload.display_name)}"
    allowance = AllowanceCharge(verified, need, what, policy.mode == "enforce")
    if context.state is None:  # offline: no ledger says what the token admitted
        notes = (approved, messages.allowance_at_admission(verified))
        return Gate(Finding(warnings=notes), verified, cost_text, allowance)
    use = context.state.allowance_use(namespace, verified.jti)
    spent = check_allowance(allowance, use, context.entry)
    if spent is not None:  # in warn mode admitted all the same, and its use recorded
        return Gate(Finding((spent,)), verified, cost_text, allowance)
    return Gate(Finding(warnings=(approved,)), verified, cost_text, allowance)
