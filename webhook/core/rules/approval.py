"""Whether a verified approval covers a workload: bound to namespace, experiment (or name),
cost and time, given by someone who may approve here, and with enough of its allowance left.

The signature was checked before (webhook.approvals holds the keys); this module only
compares claims with the workload, with the clock passed in, and what the ledger says the
token already admitted with what this workload adds (`check_allowance`, which the ledger's
own write calls again, atomically).
"""

from __future__ import annotations

from .. import messages
from ..policy import ApproverIdentities, NamespacePolicy
from ..types import NOBODY, Approval, Estimate, Reason, Requester, Workload
from ..usage import EXPERIMENT_LABEL, OWNER_LABEL, AllowanceCharge, AllowanceUse

__all__ = ["check_allowance", "check_approval", "same_person"]

_NO_IDENTITIES = ApproverIdentities()


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


def _identities(approval: Approval, policy: NamespacePolicy) -> ApproverIdentities:
    """The approver's identities listed in the policy, under their name or their key id."""
    listed = policy.approver_identities
    by_name = listed.get(approval.approver, _NO_IDENTITIES)
    by_key = listed.get(approval.key_id)
    if by_key is None:
        return by_name
    return ApproverIdentities(by_name.users | by_key.users, by_name.groups | by_key.groups)


def _names_approver(approval: Approval, identities: ApproverIdentities, name: str) -> bool:
    return same_person(approval.approver, name) or name.strip().lower() in identities.users


def _self_approval(
    approval: Approval, policy: NamespacePolicy, requester: Requester, owner: str
) -> str:
    """Why the workload is the approver's own ('' when it is not): submitted under one of
    their names or listed identities, by a member of one of their groups, on their behalf
    (an impersonating proxy's userInfo extra naming them), or owned by them."""
    identities = _identities(approval, policy)
    user = requester.username
    if same_person(approval.approver, user):
        return messages.approval_self(approval, "submitted", user)
    if user.strip().lower() in identities.users:
        return messages.approval_self_identity(approval, user)
    for group in requester.groups:
        if group.strip().lower() in identities.groups:
            return messages.approval_self_group(approval, user, group)
    for key, values in requester.extra.items():
        for value in values:
            if _names_approver(approval, identities, value) or (
                value.strip().lower() in identities.groups
            ):
                return messages.approval_self_impersonated(approval, user, key, value)
    if _names_approver(approval, identities, owner):
        return messages.approval_self(approval, "owned", owner)
    return ""


def check_approval(
    approval: Approval,
    *,
    workload: Workload,
    estimate: Estimate,
    policy: NamespacePolicy,
    now: float,
    skew: int,
    requester: Requester = NOBODY,
) -> list[Reason]:
    """Every way the approval fails to cover this workload; [] when it covers it.

    `requester` is who the API server authenticated (request.userInfo): an approver may not
    approve what they submit under any of their identities (policy approver_identities), nor
    a workload that names them its owner."""
    problems: list[str] = []
    owner = workload.labels.get(OWNER_LABEL, "")
    own = _self_approval(approval, policy, requester, owner)
    if own:
        problems.append(own)
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


def _by_object(use: AllowanceUse) -> dict[str, tuple[str, float]]:
    """What each object was charged, its entries added up (an update or a resume charges
    under an entry of its own, `<uid>+<ms>`), in the order they were admitted."""
    objects: dict[str, tuple[str, float]] = {}
    for entry, (what, usd) in use.items():
        uid = entry.partition("+")[0]
        _, before = objects.get(uid, (what, 0.0))
        objects[uid] = (what, round(before + usd, 2))
    return objects


def check_allowance(charge: AllowanceCharge, use: AllowanceUse, entry: str) -> Reason | None:
    """Why the approval cannot take `charge` under ledger `entry`, given what it admitted
    (`use`); None when it can. A retried review replaces its own entry rather than adding
    to it; an object already admitted under the token is not a new use."""
    approval = charge.approval
    others = {key: value for key, value in use.items() if key != entry}
    objects = _by_object(others)
    if (
        approval.uses is not None
        and entry.partition("+")[0] not in objects
        and len(objects) >= approval.uses
    ):
        text = messages.allowance_uses_spent(approval, list(objects.values()), charge.what)
        return Reason("invalid-approval", text)
    used = sum(usd for _, usd in objects.values())
    if charge.usd > 0 and used + charge.usd > approval.max_usd + 1e-9:
        text = messages.allowance_spent(approval, list(objects.values()), charge.usd, charge.what)
        return Reason("invalid-approval", text)
    return None
