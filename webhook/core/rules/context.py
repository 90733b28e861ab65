"""What every rule reads, and what every rule returns.

A rule is a small function from a `Context` (and, for rules about the price, the `Pricing`)
to a `Finding`: reasons to deny, warnings to show whatever the answer, and warnings that
are only true if the workload is admitted (a deadline that will be set). Rules never decide
allowed or denied; `verdict` does, once, from everything they found.
"""

from __future__ import annotations

from typing import NamedTuple

from ..catalog import PriceTable
from ..policy import NamespacePolicy
from ..types import NOBODY, ApprovalVerifier, Reason, Requester, Workload
from ..usage import UsageView

__all__ = ["NOTHING", "Context", "Finding"]


class Context(NamedTuple):
    """One workload under review, with its namespace's rules and what they compare it with."""

    workload: Workload
    policy: NamespacePolicy
    table: PriceTable
    hours_per_month: float
    verify: ApprovalVerifier | None = None
    now: float = 0.0  # Unix seconds: approvals expire and budget months turn by it
    skew: int = 60  # approval clock skew allowed, seconds
    requester: Requester = NOBODY  # who the API server authenticated
    state: UsageView | None = None  # current use; None: quotas and budgets are not checked
    # The ledger entry this review charges under (usage.ledger_entry), and what the object's
    # version before an update holds already: an update charges its approval what it adds.
    entry: str = ""
    credit: float = 0.0


class Finding(NamedTuple):
    """What one rule found."""

    reasons: tuple[Reason, ...] = ()
    warnings: tuple[str, ...] = ()  # shown whatever the answer
    if_admitted: tuple[str, ...] = ()  # true only if the workload is admitted


NOTHING = Finding()
