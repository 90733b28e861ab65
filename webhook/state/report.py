"""Usage against quotas and budgets, for `costgate status` and GET /status."""

from __future__ import annotations

from typing import Any

from ..core import messages
from ..core.policy import Policy
from ..core.usage import Budget, BudgetScope, Quota, Totals, budget_period
from . import State
from .ledger import Doc, budget_key, spent_by, spent_in

__all__ = ["render_status", "usage_report"]


def _quota(quota: Quota) -> dict[str, Any]:
    return {
        "max_gpus": quota.max_gpus,
        "max_gpus_by_type": dict(quota.max_gpus_by_type),
        "max_committed_usd": quota.max_committed_usd,
    }


def _use(totals: Totals) -> dict[str, Any]:
    return {
        "gpus": totals.gpus,
        "gpus_by_type": dict(totals.gpus_by_type),
        "committed_usd": totals.usd,
        "workloads": totals.workloads,
    }


def _draws_on(budget: Budget, experiment: str) -> str:
    """Which budget an experiment's spend counts against: its own, the shared one of unlisted
    experiments, none, or it may spend nothing (denied)."""
    if budget.denies(experiment):
        return "denied"
    scope = budget.scope_for(experiment)
    if scope is None:
        return "none"
    return "shared" if scope.kind == "unlisted" else "own"


def _budget_of(doc: Doc, scope: BudgetScope, period: str, limit: float | None) -> dict[str, Any]:
    return {"period": period, "spent_usd": spent_by(doc, scope, period), "budget_usd": limit}


def usage_report(
    state: State, policy: Policy, *, namespace: str | None = None, now: float
) -> dict[str, Any]:
    """Per namespace: live use and quota, per owner likewise, per experiment the spend in
    the current period and the budget it draws on; the shared budget of unlisted experiments
    and the namespace's budget of all experiments, where the policy sets them."""
    state.tally.expire(now)
    names = set(state.tally.namespaces()) | set(state.ledger.namespaces())
    names |= {n for n, rules in policy.namespaces.items() if rules.limits_anything}
    if namespace is not None:
        names = {namespace}
    rows = []
    for name in sorted(names):
        rules = policy.for_namespace(name)
        budget = rules.budget
        period = budget_period(budget.period, now)
        doc = state.ledger.document(name)
        keys = set(doc.get("spent", {})) | {entry[0] for entry in doc.get("pending", {}).values()}
        experiments = sorted(
            {key.rpartition("/")[0] for key in keys if key.rpartition("/")[2] == period}
            | budget.listed
        )
        shared = None
        if budget.unlisted == "share" and budget.usd is not None:
            shared = _budget_of(
                doc, BudgetScope("unlisted", listed=budget.listed), period, budget.usd
            )
        whole = None
        if budget.namespace_usd is not None:
            whole = _budget_of(doc, BudgetScope("namespace"), period, budget.namespace_usd)
        rows.append(
            {
                "namespace": name,
                **_use(state.tally.namespace_totals(name)),
                "quota": _quota(rules.quota),
                "owners": [
                    {
                        "owner": owner,
                        **_use(state.tally.owner_totals(name, owner)),
                        "quota": _quota(rules.quota_for_owner(owner)),
                    }
                    for owner in state.tally.owners(name)
                ],
                "budgets": [
                    {
                        "experiment": experiment,
                        "period": period,
                        "spent_usd": spent_in(doc, budget_key(experiment, period)),
                        # its own budget; a shared one is shared_budget
                        "budget_usd": budget.limit_for(experiment)
                        if _draws_on(budget, experiment) == "own"
                        else None,
                        "draws_on": _draws_on(budget, experiment),
                    }
                    for experiment in experiments
                ],
                "shared_budget": shared,
                "namespace_budget": whole,
            }
        )
    sync = state.cluster.sync_state() if state.cluster is not None else {}
    return {"state": state.mode, "ready": state.ready(), "sync": sync, "namespaces": rows}


def _of(used: float, cap: float | None, money: bool = False) -> str:
    shown = messages.money(used) if money else f"{used:g}"
    if cap is None:
        return shown
    limit = messages.money(cap) if money else f"{cap:g}"
    share = f" ({used / cap:.0%})" if cap else ""
    return f"{shown} of {limit}{share}"


def render_status(report: dict[str, Any]) -> str:
    """The report as a terminal reads it: one table of scopes, one of budgets."""
    lines = []
    sync = report.get("sync") or {}
    state = report["state"] + ("" if report["ready"] else " (not in sync)")
    if sync:
        state += ": " + ", ".join(f"{k} {v}" for k, v in sync.items())
    lines.append(f"state: {state}")
    scopes = [("SCOPE", "WORKLOADS", "GPUS", "BY TYPE", "COMMITTED")]
    budgets = [("NAMESPACE", "EXPERIMENT", "PERIOD", "SPENT", "BUDGET")]
    for row in report["namespaces"]:
        entries = [(f"namespace/{row['namespace']}", row)]
        entries += [(f"  owner/{o['owner'] or '(none)'}", o) for o in row["owners"]]
        for scope, use in entries:
            quota = use["quota"]
            by_type = ", ".join(
                f"{t} {_of(c, quota['max_gpus_by_type'].get(t))}"
                for t, c in sorted(use["gpus_by_type"].items())
            )
            scopes.append(
                (
                    scope,
                    str(use["workloads"]),
                    _of(use["gpus"], quota["max_gpus"]),
                    by_type or "-",
                    _of(use["committed_usd"], quota["max_committed_usd"], money=True),
                )
            )
        together = [
            (scope, row.get(key))
            for scope, key in (
                ("(all experiments)", "namespace_budget"),
                ("(unlisted)", "shared_budget"),
            )
        ]
        for scope, whole in together:
            if whole is not None:
                cap = whole["budget_usd"]
                spent = _of(whole["spent_usd"], cap, money=True)
                budgets.append(
                    (row["namespace"], scope, whole["period"], spent, messages.money(cap))
                )
        for budget in row["budgets"]:
            cap = budget["budget_usd"]
            draws_on = budget.get("draws_on", "own")
            shown = messages.money(cap) if cap is not None else "none"
            budgets.append(
                (
                    row["namespace"],
                    budget["experiment"] or "(none)",
                    budget["period"],
                    _of(budget["spent_usd"], cap, money=True),
                    shown if draws_on in ("own", "none") else draws_on,
                )
            )
    for table in (scopes, budgets):
        if len(table) == 1:
            continue
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        lines.append("")
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
        ]
    if len(scopes) == 1 and len(budgets) == 1:
        lines.append("no live GPU workloads and no spend recorded")
    return "\n".join(lines)
