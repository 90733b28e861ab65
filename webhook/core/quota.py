"""Quotas and budgets: what a workload adds to what its namespace, owner and experiment hold.

A quota caps what runs at once (GPUs, per type or in all; committed cost, the sum of the
estimates of live workloads). A budget caps what an experiment spends over its life or a
calendar month. The current use comes from a `UsageView` the edge passes in (a watch cache
of the cluster, or memory); this module only compares numbers and never waits on I/O.
The budget check here is advisory: the ledger write at the edge re-checks it atomically,
so two replicas cannot both spend the last dollar.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Literal, NamedTuple, Protocol

from . import messages
from .catalog import PriceTable
from .pricing import Pricing
from .types import EMPTY, INFINITE, Decision, Reason, Workload

__all__ = [
    "EXPERIMENT_LABEL",
    "OWNER_LABEL",
    "Budget",
    "BudgetCharge",
    "Quota",
    "Totals",
    "Usage",
    "UsageView",
    "budget_period",
    "check_allowed_types",
    "check_limits",
    "demand",
    "over_budget_now",
    "refused",
    "without",
]

OWNER_LABEL = "owner"
EXPERIMENT_LABEL = "experiment"
BudgetPeriod = Literal["lifetime", "month"]


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


class Budget(NamedTuple):
    """What each experiment of a namespace may spend: `usd` by default, or its own line in
    `experiments`, over its whole life or per calendar month (UTC)."""

    usd: float | None = None
    period: BudgetPeriod = "lifetime"
    experiments: tuple[tuple[str, float], ...] = ()

    def limit_for(self, experiment: str) -> float | None:
        for name, usd in self.experiments:
            if name == experiment:
                return usd
        return self.usd


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
    gpus_by_type: Mapping[str, float] = EMPTY  # type: ignore[assignment]
    usd: float = 0.0
    workloads: int = 0


class UsageView(Protocol):
    """Current use, read without waiting: the watch cache or the in-memory store."""

    def namespace_totals(self, namespace: str) -> Totals: ...

    def owner_totals(self, namespace: str, owner: str) -> Totals: ...

    def spent(self, namespace: str, experiment: str, period: str) -> float: ...


class BudgetCharge(NamedTuple):
    """A budget the edge must charge in its ledger once the workload is admitted."""

    namespace: str
    experiment: str
    period: str  # "lifetime" or "YYYY-MM"
    usd: float
    limit: float
    enforce: bool = True  # False in warn mode: record the spend even above the limit


def budget_period(period: BudgetPeriod, now: float) -> str:
    """The ledger key of the period `now` falls in."""
    return "lifetime" if period == "lifetime" else time.strftime("%Y-%m", time.gmtime(now))


def demand(workload: Workload, pricing: Pricing) -> Usage:
    """GPUs held at the busiest moment, in all and per type, and the estimate as the cost.

    A Workflow's per-type peak is its concurrency tree evaluated with that type's GPUs, so
    an H100 step and a T4 step that never overlap do not add up."""
    per_shape = [dict(held) if len(held) < 2 else _summed(held) for held in pricing.shape_gpus]
    types = sorted({t for units in per_shape for t in units})
    by_type = tuple(
        (gpu_type, _peak(workload, [units.get(gpu_type, 0.0) for units in per_shape]))
        for gpu_type in types
    )
    owner = workload.labels.get(OWNER_LABEL, "")
    experiment = workload.labels.get(EXPERIMENT_LABEL, "")
    return Usage(
        namespace=workload.namespace,
        owner=owner if type(owner) is str else "",
        experiment=experiment if type(experiment) is str else "",
        gpus=_peak(workload, [sum(units.values()) for units in per_shape]),
        gpus_by_type=by_type,
        usd=pricing.estimate.usd,
    )


def _summed(held: tuple[tuple[str, float], ...]) -> dict[str, float]:
    units: dict[str, float] = {}
    for gpu_type, count in held:
        units[gpu_type] = units.get(gpu_type, 0.0) + count
    return units


def _peak(workload: Workload, rates: list[float]) -> float:
    """GPUs at the busiest moment given each shape's GPUs per pod."""
    if workload.concurrency is None:
        return sum(rate * shape.replicas for rate, shape in zip(rates, workload.pods, strict=True))
    return workload.concurrency.peak(rates)


def check_allowed_types(
    workload: Workload, pricing: Pricing, allowed: frozenset[str], table: PriceTable
) -> list[Reason]:
    """Every GPU the workload may land on must be of an allowed type. A pod that pins no
    type may land on any GPU, so it must pin one."""
    if not allowed:
        return []
    reasons: list[Reason] = []
    for shape, resolution in zip(workload.pods, pricing.resolutions, strict=True):
        if not shape.gpus:
            continue
        if not resolution.candidates:
            text = messages.gpu_type_unpinned(workload.namespace, sorted(allowed))
        else:
            refused = list(table.by_price(resolution.candidates - allowed))
            if not refused:
                continue
            text = messages.gpu_type_not_allowed(refused, workload.namespace, sorted(allowed))
        reasons.append(Reason("gpu-type-not-allowed", text))
    return reasons


def check_limits(
    usage: Usage,
    *,
    workload: Workload,
    namespace_quota: Quota,
    owner_quota: Quota,
    budget: Budget,
    view: UsageView,
    now: float,
    warn_ratio: float,
    enforce: bool = True,
) -> tuple[list[Reason], list[str], BudgetCharge | None]:
    """(over-quota and over-budget reasons, near-limit warnings, the budget to charge if the
    workload is admitted)."""
    reasons: list[Reason] = []
    warnings: list[str] = []
    what = f"{workload.kind} {messages.quote(workload.display_name)}"
    namespace = usage.namespace
    scopes: list[tuple[str, Quota, Totals]] = []
    in_namespace = f"namespace {messages.quote(namespace)}"
    if not namespace_quota.empty:
        scopes.append((in_namespace, namespace_quota, view.namespace_totals(namespace)))
    if not owner_quota.empty:
        owner = f"owner {messages.quote(usage.owner)} in {in_namespace}"
        scopes.append((owner, owner_quota, view.owner_totals(namespace, usage.owner)))
    for scope, quota, totals in scopes:
        checks: list[tuple[str, float, float, float, bool]] = []
        if quota.max_gpus is not None:
            checks.append(("GPUs", totals.gpus, usage.gpus, quota.max_gpus, False))
        held = dict(usage.gpus_by_type)
        for gpu_type, cap in quota.max_gpus_by_type:
            if gpu_type in held:
                used = totals.gpus_by_type.get(gpu_type, 0.0)
                checks.append((f"{gpu_type} GPUs", used, held[gpu_type], cap, False))
        if quota.max_committed_usd is not None:
            checks.append(("committed cost", totals.usd, usage.usd, quota.max_committed_usd, True))
        for name, used, adds, cap, money in checks:
            after = used + adds
            if after > cap + 1e-9:
                text = messages.over_quota(
                    scope, name, used, adds, cap, totals.workloads, what, money=money
                )
                reasons.append(Reason("over-quota", text))
            elif cap > 0 and after >= warn_ratio * cap:
                warnings.append(messages.near_quota(scope, name, after, cap, money=money))

    charge: BudgetCharge | None = None
    limit = budget.limit_for(usage.experiment) if usage.experiment else None
    if limit is not None and usage.usd != INFINITE:
        period = budget_period(budget.period, now)
        spent = view.spent(namespace, usage.experiment, period)
        charge = BudgetCharge(namespace, usage.experiment, period, usage.usd, limit, enforce)
        if spent + usage.usd > limit + 1e-9:
            text = messages.over_budget(
                usage.experiment, namespace, period, spent, limit, usage.usd, what
            )
            reasons.append(Reason("over-budget", text))
        elif limit > 0 and spent + usage.usd >= warn_ratio * limit:
            after = spent + usage.usd
            warnings.append(messages.near_budget(usage.experiment, period, after, limit))
    return reasons, warnings, charge


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

    def spent(self, namespace: str, experiment: str, period: str) -> float:
        spent = self._view.spent(namespace, experiment, period)
        same = namespace == self._old.namespace and experiment == self._old.experiment
        return max(0.0, spent - self._old.usd) if same else spent


def without(view: UsageView, old: Usage | None) -> UsageView:
    """`view` as if the workload that held `old` were not there (for updates)."""
    return view if old is None else _Without(view, old)


def refused(decision: Decision, reason: Reason) -> Decision:
    """`decision` turned into a denial for `reason`, found after the core decided: the
    ledger refused the charge (another replica spent the budget first) or could not be
    written, or the state is not in sync."""
    audit = dict(decision.audit)
    audit["decision"] = "deny"
    audit["reasons"] = ",".join(dict.fromkeys((*(r.code for r in decision.reasons), reason.code)))
    return decision._replace(
        allowed=False,
        reasons=(*decision.reasons, reason),
        warnings=(),
        deadline=None,
        stamp=None,
        audit=audit,
        usage=None,
        charge=None,
    )


def over_budget_now(decision: Decision, spent: float) -> Reason:
    """The over-budget reason when the ledger, read fresh, refuses the charge."""
    charge = decision.charge
    workload = decision.workload
    assert charge is not None and workload is not None
    what = f"{workload.kind} {messages.quote(workload.display_name)}"
    text = messages.over_budget(
        charge.experiment, charge.namespace, charge.period, spent, charge.limit, charge.usd, what
    )
    return Reason("over-budget", text)
