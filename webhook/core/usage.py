"""What workloads hold and what they may hold: quotas, budgets, usage, budget charges,
approvals' allowances, and the label names that attribute a workload to an owner and an
experiment.

Values only, with their arithmetic; the rules that compare them live in `rules.limits`.
The current use comes from a `UsageView` the edge passes in (a watch cache of the cluster,
or memory), so nothing here waits on I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, NamedTuple, Protocol

from .types import INFINITE, Approval, Request

__all__ = [
    "EXPERIMENT_LABEL",
    "OWNER_LABEL",
    "AllowanceCharge",
    "AllowanceEntry",
    "AllowanceUse",
    "Budget",
    "BudgetCharge",
    "BudgetPeriod",
    "BudgetScope",
    "Quota",
    "Totals",
    "UnlistedRule",
    "Usage",
    "UsageView",
    "budget_period",
    "ledger_entry",
    "object_uid",
    "without",
]

# Attribution: who answers for a GPU workload, and what it is for.
OWNER_LABEL = "owner"
EXPERIMENT_LABEL = "experiment"
BudgetPeriod = Literal["lifetime", "month"]
# Experiments the policy does not name in `experiments`: share one budget of `usd` (so a new
# label value buys nothing), each get `usd` (default), or are denied.
UnlistedRule = Literal["share", "default", "deny"]
_NONE: Mapping[str, float] = MappingProxyType({})


class Quota(NamedTuple):
    """Caps on what runs at once; None (or absent from max_gpus_by_type) means no cap."""

    max_gpus: float | None = None
    max_gpus_by_type: tuple[tuple[str, float], ...] = ()
    max_committed_usd: float | None = None

    @property
    def empty(self) -> bool:
        return (
            self.max_gpus is None and not self.max_gpus_by_type and self.max_committed_usd is None
        )


class BudgetScope(NamedTuple):
    """Whose spend one budget of a namespace adds up: one experiment's; every experiment's
    but those `listed` in the policy (the shared budget of unlisted experiments); or every
    experiment's (the namespace's budget)."""

    kind: Literal["experiment", "unlisted", "namespace"]
    experiment: str = ""
    listed: frozenset[str] = frozenset()

    def covers(self, experiment: str) -> bool:
        if self.kind == "experiment":
            return experiment == self.experiment
        return self.kind == "namespace" or experiment not in self.listed


class Budget(NamedTuple):
    """What a namespace's experiments may spend, over their whole life or per calendar month
    (UTC): each experiment named in `experiments` its own amount; the others (`unlisted`)
    together `usd` (share), each `usd` (default), or nothing (deny); and all of them
    together at most `namespace_usd`."""

    usd: float | None = None
    period: BudgetPeriod = "lifetime"
    experiments: tuple[tuple[str, float], ...] = ()
    namespace_usd: float | None = None
    unlisted: UnlistedRule = "share"

    @property
    def listed(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.experiments)

    def limit_for(self, experiment: str) -> float | None:
        """The experiment's own budget, or the amount of the shared one it draws on."""
        for name, usd in self.experiments:
            if name == experiment:
                return usd
        return None if self.unlisted == "deny" else self.usd

    def scope_for(self, experiment: str) -> BudgetScope | None:
        """The budget `experiment` draws on besides the namespace's; None: none (or the
        experiment is unlisted and denied: `denies`)."""
        if any(name == experiment for name, _ in self.experiments):
            return BudgetScope("experiment", experiment)
        if self.usd is None or self.unlisted == "deny":
            return None
        if self.unlisted == "share":
            return BudgetScope("unlisted", listed=self.listed)
        return BudgetScope("experiment", experiment)

    def denies(self, experiment: str) -> bool:
        """Whether `experiment` may spend nothing: unlisted where unlisted ones are denied."""
        return self.unlisted == "deny" and all(name != experiment for name, _ in self.experiments)


class Usage(NamedTuple):
    """What one live workload holds: the unit a state store adds up."""

    namespace: str
    owner: str
    experiment: str
    gpus: float  # at its busiest moment, MIG slices as fractions of a GPU
    gpus_by_type: tuple[tuple[str, float], ...]
    usd: float  # its estimate: the cost it commits


class Totals(NamedTuple):
    """The sum of the usages of a namespace's (or an owner's) live workloads."""

    gpus: float = 0.0
    gpus_by_type: Mapping[str, float] = _NONE
    usd: float = 0.0
    workloads: int = 0


class AllowanceEntry(NamedTuple):
    """One workload admitted under an approval, as the ledger keeps it."""

    what: str  # how messages name it: `Job "train-a"`
    usd: float  # what it was charged to the approval


# What an approval has admitted: ledger entry (see `ledger_entry`) -> what it was charged.
AllowanceUse = Mapping[str, AllowanceEntry]


class UsageView(Protocol):
    """Current use, read without waiting: the watch cache or the in-memory store."""

    def namespace_totals(self, namespace: str) -> Totals: ...

    def owner_totals(self, namespace: str, owner: str) -> Totals: ...

    def spent(self, namespace: str, scope: str | BudgetScope, period: str) -> float:
        """What `scope` (an experiment's name, or a BudgetScope) spent in `period`."""
        ...

    def allowance_use(self, namespace: str, jti: str) -> AllowanceUse: ...


class BudgetCharge(NamedTuple):
    """A spend the edge must charge in its ledger once the workload is admitted, under its
    experiment, and check in one write against every budget it falls in (`budgets`)."""

    namespace: str
    experiment: str
    period: str  # "lifetime" or "YYYY-MM"
    usd: float
    limit: float  # the experiment's budget: its own, or the shared one (INFINITE: none)
    enforce: bool = True  # False in warn mode: record the spend even above the limit
    # the experiments `limit` does not cover when it is the shared budget of unlisted ones
    listed: frozenset[str] | None = None
    namespace_limit: float | None = None  # the namespace's budget of all experiments

    def budgets(self) -> tuple[tuple[BudgetScope, float], ...]:
        """(whose spend, limit) of each budget the charge must fit in, the experiment's first."""
        if self.listed is not None:
            own = BudgetScope("unlisted", listed=self.listed)
        else:
            own = BudgetScope("experiment", self.experiment)
        found: tuple[tuple[BudgetScope, float], ...] = ()
        if self.limit != INFINITE:
            found = ((own, self.limit),)
        if self.namespace_limit is not None:
            found += ((BudgetScope("namespace"), self.namespace_limit),)
        return found


class AllowanceCharge(NamedTuple):
    """What the edge must charge to an approval's allowance once the workload is admitted,
    in the same ledger write as its budget charge."""

    approval: Approval
    usd: float  # what this admission adds under the approval
    what: str  # how messages name the workload
    enforce: bool = True  # False in warn mode: record the use even past the allowance


def object_uid(request: Request) -> str:
    """The uid the API server gave the object (the review's own uid if it shows none)."""
    metadata = request.obj.get("metadata")
    return str(metadata.get("uid") or request.uid) if isinstance(metadata, dict) else ""


def ledger_entry(request: Request, now: float) -> str:
    """The ledger entry a review charges under: a create its object's uid (a retried review
    replaces its own charge), an update what it adds under an entry of its own."""
    uid = object_uid(request)
    return uid if request.operation == "CREATE" else f"{uid}+{int(now * 1000)}"


def budget_period(period: BudgetPeriod, now: float) -> str:
    """The ledger key of the period `now` falls in."""
    return "lifetime" if period == "lifetime" else time.strftime("%Y-%m", time.gmtime(now))


def _minus(totals: Totals, usage: Usage) -> Totals:
    by_type = dict(totals.gpus_by_type)
    for gpu_type, count in usage.gpus_by_type:
        by_type[gpu_type] = max(0.0, by_type.get(gpu_type, 0.0) - count)
    return Totals(
        max(0.0, totals.gpus - usage.gpus),
        by_type,
        max(0.0, totals.usd - usage.usd),
        max(0, totals.workloads - 1),
    )


class _Without:
    """A view without one workload's own use: an update is measured against the rest."""

    def __init__(self, view: UsageView, old: Usage) -> None:
        self._view = view
        self._old = old

    def namespace_totals(self, namespace: str) -> Totals:
        totals = self._view.namespace_totals(namespace)
        return _minus(totals, self._old) if namespace == self._old.namespace else totals

    def owner_totals(self, namespace: str, owner: str) -> Totals:
        totals = self._view.owner_totals(namespace, owner)
        same = namespace == self._old.namespace and owner == self._old.owner
        return _minus(totals, self._old) if same else totals

    def spent(self, namespace: str, scope: str | BudgetScope, period: str) -> float:
        spent = self._view.spent(namespace, scope, period)
        if isinstance(scope, str):
            scope = BudgetScope("experiment", scope)
        same = namespace == self._old.namespace and scope.covers(self._old.experiment)
        return max(0.0, spent - self._old.usd) if same else spent

    def allowance_use(self, namespace: str, jti: str) -> AllowanceUse:
        return self._view.allowance_use(namespace, jti)


def without(view: UsageView, old: Usage | None) -> UsageView:
    """`view` as if the workload that held `old` were not there (for updates)."""
    return view if old is None else _Without(view, old)
