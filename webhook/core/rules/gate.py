"""The cost gate: a workload dearer than its namespace's threshold needs an approval that
covers it (signed by an approver who may approve here, not by its requester or owner)."""

from __future__ import annotations

from typing import NamedTuple

from .. import messages
from ..types import ANNOTATION_APPROVAL, Approval, Estimate, Reason
from .approval import check_approval
from .context import NOTHING, Context, Finding

__all__ = ["OPEN", "Gate", "gate", "threshold"]


class Gate(NamedTuple):
    finding: Finding
    approval: Approval | None  # the approval that lifted the gate
    cost_text: str = ""  # messages.cost(estimate), when the gate had to say it


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
    return Gate(Finding(warnings=(messages.approved(verified),)), verified, cost_text)
