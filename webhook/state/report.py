"""Usage against quotas and budgets, for `costgate status` and GET /status."""

from __future__ import annotations

from typing import Any

from ..core import messages
from ..core.policy import Policy
from ..core.usage import Quota, Totals, budget_period
from . import State
from .ledger import budget_key, spent_in

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


def usage_report(
    state: State, policy: Policy, *, namespace: str | None = None, now: float
) -> dict[str, Any]:
    """Per namespace: live use and quota, per owner likewise, per experiment the spend in
    the current period and its budget."""
    state.tally.expire(now)
    names = set(state.tally.namespaces()) | set(state.ledger.namespaces())
    names |= {n for n, rules in policy.namespaces.items() if rules.limits_anything}
    if namespace is not None:
        names = {namespace}
    rows = []
    for name in sorted(names):
        rules = policy.for_namespace(name)
        period = budget_period(rules.budget.period, now)
        doc = state.ledger.document(name)
        keys = set(doc.get("spent", {})) | {entry[0] for entry in doc.get("pending", {}).values()}
        experiments = sorted(
            {key.rpartition("/")[0] for key in keys if key.rpartition("/")[2] == period}
            | {experiment for experiment, _ in rules.budget.experiments}
        )
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
                        "budget_usd": rules.budget.limit_for(experiment),
                    }
                    for experiment in experiments
                ],
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
        for budget in row["budgets"]:
            cap = budget["budget_usd"]
            budgets.append(
                (
                    row["namespace"],
                    budget["experiment"],
                    budget["period"],
                    _of(budget["spent_usd"], cap, money=True),
                    messages.money(cap) if cap is not None else "none",
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
