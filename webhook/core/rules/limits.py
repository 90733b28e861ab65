"""Quotas and budgets: what a workload adds to what its namespace, owner and experiment hold.

A quota caps what runs at once (GPUs, per type or in all; committed cost, the sum of the
estimates of live workloads). A budget caps what an experiment spends over its life or a
calendar month. This check is advisory for budgets: the ledger write at the edge checks
again atomically, so two replicas cannot both spend the last dollar.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import messages
from ..types import INFINITE, Reason, Workload
from ..usage import BudgetCharge, Quota, Totals, Usage, UsageView, budget_period
from .context import Context, Finding

__all__ = ["Limits", "limits", "over_budget_now"]


class Limits(NamedTuple):
    finding: Finding
    charge: BudgetCharge | None  # the budget to charge once the workload is admitted


def _what(workload: Workload) -> str:
    return f"{workload.kind} {messages.quote(workload.display_name)}"


def limits(context: Context, usage: Usage, view: UsageView) -> Limits:
    """Over-quota and over-budget reasons, near-limit warnings, and the charge."""
    workload, policy = context.workload, context.policy
    reasons: list[Reason] = []
    warnings: list[str] = []
    what = _what(workload)
    namespace = usage.namespace
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

    charge: BudgetCharge | None = None
    limit = policy.budget.limit_for(usage.experiment) if usage.experiment else None
    if limit is not None and usage.usd != INFINITE:
        period = budget_period(policy.budget.period, context.now)
        spent = view.spent(namespace, usage.experiment, period)
        enforce = policy.mode == "enforce"
        charge = BudgetCharge(namespace, usage.experiment, period, usage.usd, limit, enforce)
        after = spent + usage.usd
        if after > limit + 1e-9:
            text = messages.over_budget(
                usage.experiment, namespace, period, spent, limit, usage.usd, what
            )
            reasons.append(Reason("over-budget", text))
        elif limit > 0 and after >= policy.quota_warning_ratio * limit:
            warnings.append(messages.near_budget(usage.experiment, period, after, limit))
    if reasons and workload.run_of:  # its controller made it: say where the refusal shows
        note = messages.run_refused(workload.run_of)
        reasons = [reason._replace(message=reason.message + note) for reason in reasons]
    return Limits(Finding(tuple(reasons), tuple(warnings)), charge)


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


def over_budget_now(charge: BudgetCharge, workload: Workload, spent: float) -> Reason:
    """The over-budget reason when the ledger, read fresh, refuses the charge."""
    text = messages.over_budget(
        charge.experiment,
        charge.namespace,
        charge.period,
        spent,
        charge.limit,
        charge.usd,
        _what(workload),
    )
    if workload.run_of:
        text += messages.run_refused(workload.run_of)
    return Reason("over-budget", text)
