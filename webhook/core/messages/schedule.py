"""Sentences about CronJobs and CronWorkflows: schedules that cannot be read, what a
schedule can spend in a month, and a run refused when its controller creates it."""

from __future__ import annotations

from collections.abc import Iterable

from ..quantities import format_hours
from ..types import ANNOTATION_APPROVAL, ANNOTATION_MAX_RUNTIME, Estimate
from .text import money, quote

__all__ = [
    "invalid_concurrency_policy",
    "invalid_schedule",
    "over_monthly_limit",
    "run_refused",
    "scheduled_cost",
    "too_many_schedules",
    "unknown_time_zone",
]


def invalid_schedule(path: str, value: object, problem: str) -> str:
    return (
        f"{path} {quote(value)} is not a schedule Kubernetes or Argo runs ({problem}); write "
        f"five fields (minute hour day month weekday, e.g. '0 2 * * *'), a macro such as "
        f"@daily, or @every 6h"
    )


def too_many_schedules(count: int, most: int) -> str:
    return f"spec.schedules lists {count:,} schedules, more than the {most} costgate reads"


def unknown_time_zone(path: str, name: str) -> str:
    return (
        f"{path} {quote(name)} is not a time zone of the IANA database; use a name such as "
        f"Europe/Berlin or America/New_York, or leave it unset"
    )


def invalid_concurrency_policy(value: object, allowed: Iterable[str]) -> str:
    return f"spec.concurrencyPolicy {quote(value)} is not one of {', '.join(allowed)}"


def _runs(runs: float) -> str:
    """43,800 or 30.4 (a month of nights is not a whole number)."""
    return f"{runs:,.0f}" if runs >= 1000 or runs == int(runs) else f"{runs:,.3g}"


def scheduled_cost(estimate: Estimate, run_text: str) -> str:
    """`$40,179.20/month (at most 1 run at once × $55.04/h × 730h; one run: $330.24 (...))`
    or `$1,005.40/month (30.42 runs × $33.05 (...))`, whichever bound is lower; `run_text`
    is messages.cost of one run."""
    run = estimate.run
    assert run is not None and estimate.schedule is not None
    runs = estimate.schedule.runs_per_month
    if estimate.basis == "peak":  # bounded by what can run at once, all month
        at_once = "1 run" if estimate.at_once == 1 else f"{estimate.at_once:,} runs"
        return (
            f"{money(estimate.usd)}/month (at most {at_once} at once × "
            f"{money(run.peak_usd_per_hour)}/h × {format_hours(round(estimate.hours * 3600))}; "
            f"one run: {run_text})"
        )
    return f"{money(estimate.usd)}/month ({_runs(runs)} runs × {run_text})"


def over_monthly_limit(
    what: str,
    estimate: Estimate,
    limit: float,
    namespace: str,
    cost_text: str,
    *,
    approvals: bool = True,
) -> str:
    """A schedule dearer a month than the namespace's monthly (serving) threshold."""
    schedule = estimate.schedule
    assert schedule is not None
    at_once = "1 at a time" if estimate.at_once == 1 else f"up to {estimate.at_once:,} at once"
    less = "run it less often"
    if estimate.at_once > 1:
        less += ", one at a time (concurrencyPolicy: Forbid)"
    less += f" or with fewer GPUs or a shorter {ANNOTATION_MAX_RUNTIME}"
    way = (
        f"ask an approver for a token (costgate approve ...) and set annotation "
        f"{ANNOTATION_APPROVAL}, or {less}"
        if approvals
        else f"it takes no approvals here: {less}"
    )
    return (
        f"{what} runs {_runs(schedule.runs_per_month)} times a month ({schedule.text}), "
        f"{at_once}: estimated cost {cost_text}, over the {money(limit)} monthly limit for "
        f"namespace {quote(namespace)}; {way}"
    )


def run_refused(run_of: str) -> str:
    """Said after a refusal of a run its controller created: where the user will find it."""
    kind, _, name = run_of.partition("/")
    if kind == "CronJob":
        where = f"as a FailedCreate event on CronJob {quote(name)}"
    else:
        where = f"as a SubmissionError condition on {kind} {quote(name)}"
    return (
        f" (this is a scheduled run: its controller records the refusal {where}; see "
        f"kubectl describe {kind.lower()} {quote(name)})"
    )
