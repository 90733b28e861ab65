"""Sentences about approvals: why a token does not cover a workload, and who approved one
that does."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..types import (
    ANNOTATION_APPROVAL,
    Approval,
)
from .text import (
    MAX_LISTED,
    money,
    quote,
    utc,
    warning,
)

__all__ = [
    "allowance_at_admission",
    "allowance_spent",
    "allowance_uses_spent",
    "approval_above_grant",
    "approval_bad_signature",
    "approval_expired",
    "approval_malformed",
    "approval_not_allowed",
    "approval_not_yet_valid",
    "approval_self",
    "approval_self_group",
    "approval_self_identity",
    "approval_self_impersonated",
    "approval_too_small",
    "approval_unknown_key",
    "approval_wrong_experiment",
    "approval_wrong_name",
    "approval_wrong_namespace",
    "approvals_disabled",
    "approved",
]


_NOT_YOURS = "nobody approves their own workload: ask another approver"


def _approval(approval: Approval) -> str:
    return f"the approval by {quote(approval.approver)} (key {approval.key_id})"


def approval_expired(approval: Approval) -> str:
    return (
        f"{_approval(approval)} expired at {utc(approval.expires_at)}; ask "
        f"{quote(approval.approver)} for a new one (costgate approve --expires ...)"
    )


def approval_not_yet_valid(approval: Approval) -> str:
    return f"{_approval(approval)} is issued for {utc(approval.issued_at)}, in the future"


def approval_wrong_namespace(approval: Approval, namespace: str) -> str:
    return (
        f"{_approval(approval)} is for namespace {quote(approval.namespace)}, not "
        f"{quote(namespace)}; approvals do not travel between namespaces"
    )


def approval_wrong_experiment(approval: Approval, experiment: str) -> str:
    return (
        f"{_approval(approval)} is for experiment {quote(approval.experiment)}, but this "
        f"workload's experiment label is {quote(experiment)}"
    )


def approval_wrong_name(approval: Approval, name: str) -> str:
    return f"{_approval(approval)} is for workload {quote(approval.name)}, not {quote(name)}"


def approval_too_small(approval: Approval, usd: float) -> str:
    return (
        f"estimated cost {money(usd)} is {money(usd - approval.max_usd)} above the "
        f"{money(approval.max_usd)} approved by {quote(approval.approver)}; ask for an "
        f"approval of at least {money(usd)}"
    )


def _own(approval: Approval, how: str) -> str:
    """Refused as the approver's own workload: `how` says through whom it is theirs."""
    return (
        f"{_approval(approval)} was given by {quote(approval.approver)}, but this workload is "
        f"{how}; {_NOT_YOURS}"
    )


def approval_self(approval: Approval, relation: str, who: str) -> str:
    return _own(approval, f"{relation} by {quote(who)}")


def approval_self_identity(approval: Approval, user: str) -> str:
    return _own(
        approval,
        f"submitted by {quote(user)}, an identity of {quote(approval.approver)} in the "
        f"policy's approver_identities",
    )


def approval_self_group(approval: Approval, user: str, group: str) -> str:
    return _own(
        approval,
        f"submitted by {quote(user)} in group {quote(group)}, a group of "
        f"{quote(approval.approver)} in the policy's approver_identities",
    )


def approval_self_impersonated(approval: Approval, user: str, key: str, value: str) -> str:
    return _own(
        approval,
        f"submitted by {quote(user)} on behalf of {quote(value)} (userInfo extra "
        f"{quote(key)}), who is {quote(approval.approver)}",
    )


def approval_not_allowed(approval: Approval, namespace: str, approvers: Iterable[str]) -> str:
    return (
        f"{quote(approval.approver)} may not approve for namespace {quote(namespace)} "
        f"(approvers there: {', '.join(sorted(approvers))})"
    )


def approval_above_grant(approval: Approval, namespace: str, most: float) -> str:
    return (
        f"{_approval(approval)} grants {money(approval.max_usd)}, more than the {money(most)} "
        f"one approval may grant in namespace {quote(namespace)}"
    )


def _admitted(objects: Sequence[tuple[str, float]], amounts: bool = True) -> str:
    """`Job "a" ($1,320.00) and Job "b" ($1,320.00)`, the first MAX_LISTED named."""
    named = [f"{what} ({money(usd)})" if amounts else what for what, usd in objects[:MAX_LISTED]]
    if len(objects) > MAX_LISTED:
        named.append(f"{len(objects) - MAX_LISTED} more")
    return named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"


def _new_one(approval: Approval) -> str:
    return f"ask {quote(approval.approver)} for a new approval (costgate approve ...)"


def allowance_spent(
    approval: Approval, objects: Sequence[tuple[str, float]], need: float, what: str
) -> str:
    """The approval's allowance cannot take this workload: `objects` are what it admitted."""
    used = round(sum(usd for _, usd in objects), 2)
    already = (
        f"{money(used)} is already admitted under it by {_admitted(objects)}"
        if objects
        else "nothing is admitted under it yet"
    )
    return (
        f"{_approval(approval)}, id {approval.jti}, allows {money(approval.max_usd)} in all; "
        f"{already}; this {what} needs {money(need)} more, {money(used + need - approval.max_usd)} "
        f"past it; {_new_one(approval)}"
    )


def allowance_uses_spent(
    approval: Approval, objects: Sequence[tuple[str, float]], what: str
) -> str:
    """The approval admitted as many workloads as its `uses` allow."""
    count = "one workload" if approval.uses == 1 else f"{approval.uses} workloads"
    return (
        f"{_approval(approval)}, id {approval.jti}, admits {count}, and it admitted "
        f"{_admitted(objects, amounts=False)}; this {what} would be one more; "
        f"{_new_one(approval)}"
    )


def allowance_at_admission(approval: Approval) -> str:
    """Offline (costgate estimate) there is no ledger to add up what a token admitted."""
    return warning(f"approval {approval.jti} is a spend allowance, added up at admission, not here")


def approval_malformed(detail: str) -> str:
    return f"annotation {ANNOTATION_APPROVAL} is not a valid approval token ({detail})"


def approval_unknown_key(key_id: str, known: Iterable[str]) -> str:
    listed = ", ".join(sorted(known)) or "none"
    return (
        f"annotation {ANNOTATION_APPROVAL} is signed with key {quote(key_id)}, which is not an "
        f"approver key of this cluster (keys: {listed})"
    )


def approval_bad_signature(key_id: str) -> str:
    return (
        f"annotation {ANNOTATION_APPROVAL} does not verify against key {quote(key_id)}: it was "
        f"changed after signing, or signed by another key"
    )


def approvals_disabled() -> str:
    return f"annotation {ANNOTATION_APPROVAL} is set, but this webhook has no approver keys"


def approved(approval: Approval) -> str:
    return warning(
        f"approved by {approval.approver} (key {approval.key_id}) up to "
        f"{money(approval.max_usd)} until {utc(approval.expires_at)}"
    )
