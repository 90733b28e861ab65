"""Everything the rules found -> the one answer: allowed or not, its outcome, and its words.

This is the only place that decides allow, deny or warn, and the only place that composes
what a user and the audit log read of a decision: the warnings in the order kubectl shows
them, the denial sentence, the audit annotations. A denial found after the core (the
ledger refused a budget charge, the state is out of reach) comes back through `verdict`
with that refusal added, so it reads like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

from . import messages
from .types import EMPTY, Approval, Estimate, Mode, Reason, Workload
from .usage import AllowanceCharge, BudgetCharge, Usage

__all__ = ["ALLOW", "Decision", "Findings", "Outcome", "refused", "verdict", "with_warning"]

# allow: a GPU workload priced and admitted. skip: admitted with nothing to price (not a
# GPU workload, a pod its priced owner made, an update that changes no cost). warn: admitted
# in warn mode although rules failed. deny: refused.
Outcome = Literal["allow", "deny", "warn", "skip"]


class Findings(NamedTuple):
    """What the core found about one request, before any verdict."""

    workload: Workload | None = None
    mode: Mode = "enforce"
    reasons: tuple[Reason, ...] = ()  # rules that failed: deny, or warn in warn mode
    # deny whatever the mode: the object cannot be read, or the state refused the workload
    refusals: tuple[Reason, ...] = ()
    status_code: int = 403
    warnings: tuple[str, ...] = ()  # shown whatever the answer
    if_admitted: tuple[str, ...] = ()  # shown only if admitted (a deadline that will be set)
    assessed: bool = False  # the rules ran: the audit log says what they found
    estimate: Estimate | None = None
    cost_text: str = ""  # messages.cost(estimate), if a rule has written it already
    runtime_seconds: int | None = None
    deadline: int | None = None  # the deadline to set if admitted in enforce mode
    approval: Approval | None = None  # the approval that lifted the cost gate
    usage: Usage | None = None  # what the workload holds once admitted
    charge: BudgetCharge | None = None  # the budget to charge once admitted
    # attribution copied into the workload's pod templates if admitted
    pod_labels: Mapping[str, str] = EMPTY
    pod_annotations: Mapping[str, str] = EMPTY
    # the estimate stamp an update dropped or edited: written back if no new one is
    kept_stamp: str | None = None
    audit: Mapping[str, str] = EMPTY  # more audit annotations
    allowance: AllowanceCharge | None = None  # the approval's allowance to charge once admitted


class Decision(NamedTuple):
    """The answer, before it is put on the wire. Built only by `verdict`.

    `reasons` are the failed rules (reported as warnings in warn mode) and the refusals;
    `deadline` is the activeDeadlineSeconds to set (None: leave it alone); `stamp` the
    estimated-cost annotation value to write (None: nothing to stamp).
    """

    outcome: Outcome
    allowed: bool  # outcome != "deny"
    findings: Findings  # what the verdict was given, for a refusal found later
    workload: Workload | None = None
    estimate: Estimate | None = None
    runtime_seconds: int | None = None
    mode: Mode = "enforce"
    reasons: tuple[Reason, ...] = ()
    warnings: tuple[str, ...] = ()
    denial: str = ""  # the status message when denied
    status_code: int = 403
    audit: Mapping[str, str] = EMPTY
    deadline: int | None = None
    stamp: str | None = None
    pod_labels: Mapping[str, str] = EMPTY
    pod_annotations: Mapping[str, str] = EMPTY
    usage: Usage | None = None
    charge: BudgetCharge | None = None
    allowance: AllowanceCharge | None = None

    @property
    def decided(self) -> Literal["allow", "deny", "warn"]:
        """The outcome as the audit log and metrics name it (a skip is an allow)."""
        return "allow" if self.outcome == "skip" else self.outcome

    @property
    def priced(self) -> bool:
        return self.estimate is not None


def verdict(found: Findings, *, words: bool = True) -> Decision:
    """The decision for what was found, in the namespace's mode. Without `words` (the
    mutating webhook, which shows none) no warnings, audit or denial are written."""
    reasons = found.reasons
    if len(reasons) > 1:
        reasons = tuple(dict.fromkeys(reasons))  # a template called twice is one problem
    enforce = found.mode == "enforce"
    if found.refusals or (reasons and enforce):
        outcome: Outcome = "deny"
    elif reasons:
        outcome = "warn"
    else:
        outcome = "allow" if found.estimate is not None else "skip"
    allowed = outcome != "deny"
    workload, estimate = found.workload, found.estimate
    # A template is priced for information: it sets no deadline and holds nothing.
    admitted = allowed and not (workload is not None and workload.informational)
    every = reasons + found.refusals if found.refusals else reasons
    stamp = found.kept_stamp if allowed else None
    if admitted and estimate is not None:
        stamp = f"{estimate.usd:.2f}"
    cost_text = found.cost_text
    if words and estimate is not None and not cost_text:
        cost_text = messages.cost(estimate)
    # positional, in field order (pinned by tests/core/test_verdict.py): every GPU review
    return Decision(
        outcome,
        allowed,
        found,
        workload,
        estimate,
        found.runtime_seconds,
        found.mode,
        every,
        _warnings(found, reasons, allowed, admitted, cost_text) if words else (),
        "" if allowed or not words else messages.denial(every),
        found.status_code,
        _audit(found, outcome, every, cost_text) if words else EMPTY,
        found.deadline if (enforce and allowed) else None,
        stamp,
        found.pod_labels if allowed else EMPTY,
        found.pod_annotations if allowed else EMPTY,
        found.usage if allowed else None,
        found.charge if allowed else None,
        found.allowance if admitted else None,
    )


def _warnings(
    found: Findings, reasons: tuple[Reason, ...], allowed: bool, admitted: bool, cost_text: str
) -> tuple[str, ...]:
    """In the order kubectl shows them: the estimate, the deadline, what warn mode would
    have denied, then what the rules noted."""
    if found.refusals:
        return ()  # what the rules said was said before the state refused: it is moot now
    head: list[str] = []
    if admitted and found.estimate is not None and found.workload is not None:
        head.append(messages.estimate_warning(found.estimate, cost_text, found.workload.total_gpus))
    if allowed:
        head += found.if_admitted
    if reasons and found.mode != "enforce":
        head += [messages.would_deny(r.code, r.message) for r in reasons]
    return (*head, *found.warnings) if head else found.warnings


def _audit(
    found: Findings, outcome: Outcome, every: tuple[Reason, ...], cost_text: str
) -> Mapping[str, str]:
    if not (found.assessed or every or found.audit):
        return EMPTY
    audit: dict[str, str] = {"decision": "allow" if outcome == "skip" else outcome}
    workload = found.workload
    if workload is not None and (found.assessed or every):
        audit["workload"] = f"{workload.kind}/{workload.display_name}"
    codes = ""
    if len(every) == 1:
        codes = every[0].code
    elif every:
        codes = ",".join(dict.fromkeys([r.code for r in every]))
    if codes and found.reasons:  # a refusal alone comes last: it was found last
        audit["reasons"] = codes
    estimate = found.estimate
    if estimate is not None:
        audit["estimated-cost-usd"] = f"{estimate.usd:.2f}"
        audit["estimate"] = cost_text
    if found.approval is not None:
        audit["approval-key-id"] = found.approval.key_id
        audit["approval-max-usd"] = f"{found.approval.max_usd:.2f}"
        audit["approval-expires"] = str(found.approval.expires_at)
    if codes and not found.reasons:
        audit["reasons"] = codes
    if found.audit:
        audit.update(found.audit)
    return audit


def refused(decision: Decision, reason: Reason) -> Decision:
    """`decision` refused for `reason`, found after the core decided: the ledger refused the
    charge (another replica spent the budget first) or could not be written, or the state
    is not in sync."""
    found = decision.findings
    return verdict(found._replace(refusals=(*found.refusals, reason)))


def with_warning(decision: Decision, text: str) -> Decision:
    """`decision` admitted without being recorded (the state is out of reach and the policy
    allows it), saying so."""
    found = decision.findings
    return verdict(found._replace(warnings=(*found.warnings, text), charge=None, allowance=None))


ALLOW = verdict(Findings())
