"""Quotas and budgets: what a workload adds to what its namespace, owner and experiment hold.

A quota caps what runs at once (GPUs, per type or in all; committed cost, the sum of the
estimates of live workloads). A budget caps what is spent over a life or a calendar month:
an experiment's own, the one experiments the policy does not list share, and the
namespace's (all experiments together); a workload's spend may fall in two of them. This
check is advisory for budgets: the ledger write at the edge checks both again atomically,
so two replicas cannot both spend the last dollar.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import messages
from ..types import INFINITE, Reason, Workload
from ..usage import (
    BudgetCharge,
    BudgetScope,
    Quota,
    Totals,
    Usage,
    UsageView,
    budget_period,
)
from .context import NOTHING, Context, Finding

__all__ = ["Limits", "limits", "over_budget_now"]


class Limits(NamedTuple):
    finding: Finding
    charge: BudgetCharge | None  # the budget to charge once the workload is admitted


def _what(workload: Workload) -> str:
    return f"{workload.kind} {messages.quote(workload.display_name)}"


def limits(context: Context, usage: Usage, view: UsageView | None) -> Limits:
    """Over-quota and over-budget reasons, near-limit warnings, and the charge. With no
    `view` (`costgate estimate`: no cluster), only what the policy alone decides: an
    unlisted experiment where those are denied."""
    workload, policy = context.workload, context.policy
    reasons: list[Reason] = []
    warnings: list[str] = []
    what = _what(workload)
    namespace = usage.namespace
    if policy.budget.denies(usage.experiment):
        text = messages.unlisted_experiment(
            usage.experiment, namespace, [name for name, _ in policy.budget.experiments]
        )
        reasons.append(Reason("over-budget", text))
    if view is None:
        return Limits(_found(workload, reasons, []), None)
    in_namespace = f"namespace {messages.quote(namespace)}"
    scopes: list[tuple[str, Quota, Totals]] = []
    if not policy.quota.empty:
        scopes.append((in_namespace, policy.quota, view.namespace_totals(namespace)))
    owner_quota = policy.quota_for_owner(usage.owner)
    if not owner_quota.empty:
        owner = f"owner {messages.quote(usage.owner)} in {in_namespace}"
        scopes.append((owner, owner_quota, view.owner_totals(namespace, usage.owner)))
    for scope, quota, totals in scopes:
        for name, used, adds, cap, money in _checks(quota, totals, usage):
            after = used + adds
            if after > cap + 1e-9:
                text = messages.over_quota(
                    scope, name, used, adds, cap, totals.workloads, what, money=money
                )
                reasons.append(Reason("over-quota", text))
            elif cap > 0 and after >= policy.quota_warning_ratio * cap:
                warnings.append(messages.near_quota(scope, name, after, cap, money=money))

    charge = _budgets(context, usage, view, what, reasons, warnings)
    return Limits(_found(workload, reasons, warnings), charge)


def _found(workload: Workload, reasons: list[Reason], warnings: list[str]) -> Finding:
    if not reasons and not warnings:
        return NOTHING
    if reasons and workload.run_of:  # its controller made it: say where the refusal shows
        note = messages.run_refused(workload.run_of)
        reasons = [reason._replace(message=reason.message + note) for reason in reasons]
    return Finding(tuple(reasons), tuple(warnings))


def _budgets(
    context: Context,
    usage: Usage,
    view: UsageView,
    what: str,
    reasons: list[Reason],
    warnings: list[str],
) -> BudgetCharge | None:
    """Check every budget the workload's spend falls in (the experiment's own or the shared
    one of unlisted experiments, and the namespace's); the charge that records it."""
    budget = context.policy.budget
    namespace, experiment = usage.namespace, usage.experiment
    scope = budget.scope_for(experiment)
    if (scope is None and budget.namespace_usd is None) or usage.usd == INFINITE:
        return None
    period = budget_period(budget.period, context.now)
    limit = budget.limit_for(experiment) if scope is not None else None
    charge = BudgetCharge(
        namespace,
        experiment,
        period,
        usage.usd,
        INFINITE if limit is None else limit,
        context.policy.mode == "enforce",
        scope.listed if scope is not None and scope.kind == "unlisted" else None,
        budget.namespace_usd,
    )
    for whose, cap in charge.budgets():
        spent = view.spent(namespace, whose, period)
        after = spent + usage.usd
        if after > cap + 1e-9:
            text = messages.over_budget(_whose(whose, charge), period, spent, cap, usage.usd, what)
            reasons.append(Reason("over-budget", text))
        elif cap > 0 and after >= context.policy.quota_warning_ratio * cap:
            warnings.append(messages.near_budget(_whose(whose, charge), period, after, cap))
    return charge


def _whose(scope: BudgetScope, charge: BudgetCharge) -> messages.BudgetOf:
    """The budget as the messages name it."""
    return messages.BudgetOf(scope.kind, charge.experiment, charge.namespace, bool(scope.listed))


def _checks(
    quota: Quota, totals: Totals, usage: Usage
) -> list[tuple[str, float, float, float, bool]]:
    """(what, used, what this adds, cap, is money) for each cap the quota sets."""
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
    return checks


def over_budget_now(
    charge: BudgetCharge, workload: Workload, spent: float, budget: int = 0
) -> Reason:
    """The over-budget reason when the ledger, read fresh, refuses the charge: `spent` in
    `charge.budgets()[budget]`, the budget that refused it."""
    whose, cap = charge.budgets()[budget]
    text = messages.over_budget(
        _whose(whose, charge), charge.period, spent, cap, charge.usd, _what(workload)
    )
    if workload.run_of:
        text += messages.run_refused(workload.run_of)
    return Reason("over-budget", text)
