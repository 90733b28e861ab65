"""Whether a verified approval covers a workload: bound to namespace, experiment (or name),
cost and time, and given by someone who may approve here.

The signature was checked before (webhook.approvals holds the keys); this module only
compares claims with the workload, with the clock passed in.
"""

from __future__ import annotations

from .. import messages
from ..policy import NamespacePolicy
from ..types import Approval, Estimate, Reason, Workload
from ..usage import EXPERIMENT_LABEL, OWNER_LABEL

__all__ = ["check_approval", "same_person"]


def _names(user: str) -> set[str]:
    """The forms a user name takes: `alice`, `oidc:alice`, `alice@example.com` and
    `system:serviceaccount:ns:alice` all name alice."""
    user = user.strip().lower()
    last = user.rpartition(":")[2]
    return {user, last, last.partition("@")[0]} - {""}


def same_person(approver: str, user: str) -> bool:
    """Whether an approver name and a Kubernetes user or owner label name the same person.
    Approver names are lowercase letters, digits and '-' (costgate keygen)."""
    return bool(approver) and approver.lower() in _names(user)


def check_approval(
    approval: Approval,
    *,
    workload: Workload,
    estimate: Estimate,
    policy: NamespacePolicy,
    now: float,
    skew: int,
    requester: str = "",
) -> list[Reason]:
    """Every way the approval fails to cover this workload; [] when it covers it.

    `requester` is the user the API server authenticated (request.userInfo.username): an
    approver may not approve what they submit, nor a workload that names them its owner."""
    problems: list[str] = []
    owner = workload.labels.get(OWNER_LABEL, "")
    if same_person(approval.approver, requester):
        problems.append(messages.approval_self(approval, "submitted", requester))
    elif same_person(approval.approver, owner):
        problems.append(messages.approval_self(approval, "owned", owner))
    if now > approval.expires_at + skew:
        problems.append(messages.approval_expired(approval))
    if approval.issued_at > now + skew:
        problems.append(messages.approval_not_yet_valid(approval))
    if approval.namespace != workload.namespace:
        problems.append(messages.approval_wrong_namespace(approval, workload.namespace))
    if approval.experiment:
        experiment = workload.labels.get(EXPERIMENT_LABEL, "")
        if approval.experiment != experiment:
            problems.append(messages.approval_wrong_experiment(approval, experiment))
    elif approval.name != workload.name:
        problems.append(messages.approval_wrong_name(approval, workload.name))
    if estimate.usd > approval.max_usd:
        problems.append(messages.approval_too_small(approval, estimate.usd))
    if policy.approvers and not (
        approval.approver in policy.approvers or approval.key_id in policy.approvers
    ):
        problems.append(
            messages.approval_not_allowed(approval, workload.namespace, policy.approvers)
        )
    if policy.max_approval_usd is not None and approval.max_usd > policy.max_approval_usd:
        problems.append(
            messages.approval_above_grant(approval, workload.namespace, policy.max_approval_usd)
        )
    return [Reason("invalid-approval", text) for text in problems]
