"""Sentences about what a workload costs: the estimate and its breakdown, the threshold,
and a cost with no bound."""

from __future__ import annotations

from collections.abc import Sequence

from ..quantities import format_hours
from ..types import (
    ANNOTATION_APPROVAL,
    ANNOTATION_MAX_FANOUT,
    ANNOTATION_MAX_RUNTIME,
    Estimate,
)
from .schedule import scheduled_cost
from .text import (
    MAX_LISTED,
    SHORT_WARNING,
    WARNING_PREFIX,
    money,
    object_name,
    one_line,
    quote,
    warning,
)

__all__ = [
    "cost",
    "estimate_warning",
    "over_threshold",
    "template_edit_raises",
    "template_edit_too_many",
    "template_estimate",
    "template_users_unseen",
    "unbounded",
]


def _span(estimate: Estimate) -> str:
    """How long the estimate holds the GPUs: `12h`, or `1m + 720h grace` when the pods
    keep them through a grace period after the deadline."""
    hours = format_hours(round(estimate.hours * 3600))
    if not estimate.grace_hours:
        return hours
    return f"{hours} + {format_hours(round(estimate.grace_hours * 3600))} grace"


def _breakdown(estimate: Estimate) -> str:
    hours = "730h/month" if estimate.per_month else _span(estimate)
    if estimate.grace_hours and not estimate.per_month:
        hours = f"({hours})"
    parts = [
        f"{line.units} × {line.label} at {money(line.usd_per_hour)}/h" for line in estimate.lines
    ]
    if len(parts) == 1:
        return f"({parts[0]} × {hours})"
    return f"(({' + '.join(parts)}) × {hours})"


def _runs(runs: float | None) -> str:
    return "" if runs is None else f" × {runs:g} run{'' if runs == 1 else 's'}"


def _workflow_breakdown(estimate: Estimate) -> str:
    hours = _span(estimate) if not estimate.grace_hours else f"({_span(estimate)})"
    parts = []
    for line in estimate.lines[:MAX_LISTED]:
        text = f"{line.shape}: {line.units} × {line.label} at {money(line.usd_per_hour)}/h"
        if estimate.basis == "steps" and line.hours is not None:
            text += f" × {format_hours(round(line.hours * 3600))}{_runs(line.runs)}"
        parts.append(text)
    if len(estimate.lines) > MAX_LISTED:
        parts.append(f"{len(estimate.lines) - MAX_LISTED:,} more templates")
    if estimate.basis == "steps":
        return f"({' + '.join(parts)})"
    peak = money(estimate.peak_usd_per_hour)
    return f"(up to {peak}/h at once × {hours}; {', '.join(parts)})"


def cost(estimate: Estimate) -> str:
    """`$1,152.00 (8 × h100-80gb at $6.00/h × 24h)`, or `$730.00/month (...)` for serving;
    Workflows say per template what the bound is made of; schedules, per month, what one
    run costs and how many a month or at once."""
    if estimate.run is not None:
        return scheduled_cost(estimate, cost(estimate.run))
    if estimate.basis != "runtime":
        return f"{money(estimate.usd)} {_workflow_breakdown(estimate)}"
    suffix = "/month" if estimate.per_month else ""
    return f"{money(estimate.usd)}{suffix} {_breakdown(estimate)}"


def estimate_warning(estimate: Estimate, cost_text: str, gpus: float) -> str:
    """The warning every admitted GPU workload gets: `cost_text` is `cost(estimate)`, `gpus`
    the most GPUs the workload runs at once (for the short form)."""
    line = WARNING_PREFIX + "estimated cost " + one_line(cost_text)
    if len(line) <= SHORT_WARNING:
        return line
    suffix = "/month" if estimate.per_month else f" over {_span(estimate)}"
    types = len({line.gpu_type for line in estimate.lines})
    kinds = "1 type" if types == 1 else f"{types} types"
    return warning(
        f"estimated cost {money(estimate.usd)}{suffix} for up to {gpus:g} GPUs at once of "
        f"{kinds} (breakdown in audit annotations)"
    )


def over_threshold(
    estimate: Estimate,
    limit: float,
    namespace: str,
    cost_text: str | None = None,
    *,
    approvals: bool = True,
) -> str:
    """Over the limit; the way through is an approval, or less GPU time where the namespace
    takes no approvals."""
    kind = "/month serving" if estimate.per_month else ""
    way = (
        f"; ask an approver for a token (costgate approve ...) and set annotation "
        f"{ANNOTATION_APPROVAL}"
        if approvals
        else f", which takes no approvals; use fewer GPUs or a shorter {ANNOTATION_MAX_RUNTIME}"
    )
    return (
        f"estimated cost {cost_text or cost(estimate)} exceeds the {money(limit)}{kind} "
        f"limit for namespace {quote(namespace)}{way}"
    )


def template_estimate(estimate: Estimate, limit: float, cost_text: str) -> str:
    over = f", above the {money(limit)} threshold" if estimate.usd > limit else ""
    return warning(f"a workflow of this template would cost up to {cost_text}{over}")


def unbounded(kind: str, name: str) -> str:
    return (
        f"GPU {object_name(kind, name)} has no bound on its cost: a withParam loop or a recursive "
        f"template runs GPU pods an unknown number of times, or a GPU exit handler (which "
        f"outlives the workflow deadline) has no activeDeadlineSeconds; set spec.parallelism, "
        f"annotation {ANNOTATION_MAX_FANOUT}, or the exit handler's activeDeadlineSeconds"
    )


# The way through for an edit of a template that running Workflows use (the other: an
# approval on each Workflow that covers its new cost, which the first reason names).
_NEW_VERSION = (
    "publish the change under a new template name for new Workflows; Argo's "
    "workflowRestrictions templateReferencing: Secure makes running Workflows fail rather "
    "than pick up an edited template"
)


def template_edit_raises(
    kind: str,
    name: str,
    raised: Sequence[tuple[str, str, float, float]],
    first: str,
) -> str:
    """An edit of a (Cluster)WorkflowTemplate that would take live Workflows past what they
    may cost: `raised` is (namespace, name, old estimate, new estimate) per Workflow, `first`
    why the first may not cost that."""
    listed = [
        f"{quote(f'{ns}/{wf}')} {money(old)} → {money(new)}"
        for ns, wf, old, new in raised[:MAX_LISTED]
    ]
    if len(raised) > MAX_LISTED:
        listed.append(f"{len(raised) - MAX_LISTED:,} more")
    one = len(raised) == 1
    count = "1 live Workflow that runs" if one else f"{len(raised):,} live Workflows that run"
    return (
        f"this edit of {kind} {quote(name)} would raise {count} it past what "
        f"{'it' if one else 'they'} may cost ({', '.join(listed)}): {first}; or {_NEW_VERSION}"
    )


def template_edit_too_many(kind: str, name: str, count: int, cap: int) -> str:
    return (
        f"{kind} {quote(name)} is run by {count:,} live Workflows, more than the {cap:,} "
        f"costgate prices again in one review, so this edit cannot be checked against them; "
        f"edit it when fewer run it, or {_NEW_VERSION}"
    )


def template_users_unseen() -> str:
    return (
        "the Workflows already running this template are not visible here, so this edit is "
        "not priced against them (the webhook in a cluster does)"
    )
