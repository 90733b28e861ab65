"""A GPU workload held to every rule: Workload -> Findings.

The rules run in the order users read their reasons, and every rule that fails adds one, so
a user sees all problems at once rather than one per `kubectl apply`. What cannot be priced
as written (unreadable GPUs or runtime) is not priced; a price for a GPU type costgate
refused to guess is not held against the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

from . import messages
from .pricing import demand, price_for
from .rules.context import NOTHING, Context, Finding
from .rules.gate import OPEN, gate, threshold
from .rules.gpus import allowed_types, gpu_types, pod_size
from .rules.grace import grace
from .rules.labels import labels
from .rules.limits import limits
from .rules.runtime import runtime
from .rules.templates import templates
from .types import (
    ANNOTATION_ESTIMATED_COST,
    COSTGATE_PREFIX,
    EMPTY,
    Approval,
    Estimate,
    Reason,
)
from .usage import AllowanceCharge, AllowanceUse, BudgetCharge, BudgetScope, Totals, Usage
from .verdict import Findings

__all__ = ["assess"]

# Reasons that mean the object cannot be priced as written: no point pricing it.
_UNPRICEABLE = frozenset({"invalid-gpu-request", "invalid-runtime", "runtime-too-long"})


class _Priced(NamedTuple):
    """What the rules about price found, and the estimate with what it commits."""

    found: tuple[Finding, ...]
    estimate: Estimate | None = None
    cost_text: str = ""  # messages.cost(estimate) if a rule wrote it; verdict writes it else
    approval: Approval | None = None
    usage: Usage | None = None
    charge: BudgetCharge | None = None
    allowance: AllowanceCharge | None = None


_UNPRICED = _Priced(())


def assess(context: Context) -> Findings:
    """What every rule finds about `context.workload`, a GPU workload priced here (batch
    or serving); `context.state` is read only when the namespace has quotas or budgets."""
    workload, policy = context.workload, context.policy
    run = runtime(context)
    reasons: list[Reason] = list(workload.problems)
    warnings: list[str] = []
    if_admitted: list[str] = []
    _gather(
        (pod_size(context), labels(context), templates(context), run.finding, grace(context)),
        reasons,
        warnings,
        if_admitted,
    )
    priced = _UNPRICED
    if not reasons or not any(r.code in _UNPRICEABLE for r in reasons):
        priced = _priced(context, run.seconds)
        _gather(priced.found, reasons, warnings, if_admitted)
    pod_labels: Mapping[str, str] = EMPTY
    pod_annotations: Mapping[str, str] = EMPTY
    if workload.copy_to:  # attribution the pods carry (a Job's template, a podMetadata)
        labels_ = workload.labels
        pod_labels = {k: labels_[k] for k in policy.required_labels if k in labels_}
        pod_annotations = {
            k: v
            for k, v in workload.annotations.items()
            if k.startswith(COSTGATE_PREFIX) and k != ANNOTATION_ESTIMATED_COST
        }
    # positional, in field order (pinned by tests/core/test_verdict.py): keywords cost a
    # third of a microsecond per review
    return Findings(
        workload,
        policy.mode,
        tuple(reasons),
        (),  # refusals: the edge's, after the core
        403,
        tuple(warnings),
        tuple(if_admitted),
        True,  # assessed
        priced.estimate,
        priced.cost_text,
        run.seconds,
        run.deadline,
        priced.approval,
        priced.usage,
        priced.charge,
        pod_labels,
        pod_annotations,
        None,  # kept_stamp: an update's, set by the engine
        EMPTY,  # audit
        priced.allowance,
    )


def _gather(
    found: tuple[Finding, ...], reasons: list[Reason], warnings: list[str], if_admitted: list[str]
) -> None:
    """Add what the rules found to the lists, in rule order. Most rules find nothing, and
    this runs on every GPU review: hence the plain loop."""
    for finding in found:
        if finding is not NOTHING:
            more_reasons, more_warnings, more_if_admitted = finding
            if more_reasons:
                reasons += more_reasons
            if more_warnings:
                warnings += more_warnings
            if more_if_admitted:
                if_admitted += more_if_admitted


def _priced(context: Context, seconds: int | None) -> _Priced:
    """The rules about price, in order: GPU types, the cost gate, allowed types, quotas
    and budgets."""
    workload, policy = context.workload, context.policy
    pricing = price_for(
        workload,
        context.table,
        policy,
        seconds,
        context.hours_per_month,
    )
    types = gpu_types(context, pricing)
    estimate = pricing.estimate
    if not math.isfinite(estimate.usd):
        text = messages.unbounded(workload.kind, workload.display_name)
        if workload.informational:  # a library template; the Workflow may bound it
            return _Priced((types, Finding(warnings=(messages.warning(text),))))
        return _Priced((types, Finding((Reason("invalid-gpu-request", text),))))
    if workload.informational:  # a template: its Workflows are gated, it is not
        cost_text = messages.cost(estimate)
        text = messages.template_estimate(estimate, threshold(context), cost_text)
        return _Priced((types, Finding(warnings=(text,))), estimate, cost_text)
    passed = OPEN
    # a price for a type we refused to guess proves nothing; a scheduled run was gated with
    # its schedule, per month
    if not types.reasons and workload.workload_class != "run":
        passed = gate(context, estimate)
    found = (types, passed.finding, allowed_types(context, pricing))
    cost_text = passed.cost_text  # written once, where it is first needed
    if not policy.limits_anything or workload.suspended:
        # nothing reads the demand; or a suspended Job, which holds and spends nothing until
        # it is resumed, and is checked against quotas and budgets then
        return _Priced(found, estimate, cost_text, passed.approval, None, None, passed.allowance)
    usage = demand(workload, pricing)
    if estimate.run is not None:
        # A schedule holds and spends nothing itself: each run is checked and charged when
        # its controller creates it. Its runs at once must fit the quotas' caps at all.
        runs = _runs_fit(context, usage, estimate)
        return _Priced(
            (*found, runs), estimate, cost_text, passed.approval, None, None, passed.allowance
        )
    # without state (costgate estimate), only what the policy alone decides
    held = limits(context, usage, context.state)
    return _Priced(
        (*found, held.finding),
        estimate,
        cost_text,
        passed.approval,
        usage,
        held.charge,
        passed.allowance,
    )


class _NoUse:
    """A namespace with nothing running: what a schedule's overlapping runs are held to."""

    def namespace_totals(self, namespace: str) -> Totals:
        return Totals()

    def owner_totals(self, namespace: str, owner: str) -> Totals:
        return Totals()

    def spent(self, namespace: str, scope: str | BudgetScope, period: str) -> float:
        return 0.0

    def allowance_use(self, namespace: str, jti: str) -> AllowanceUse:
        return {}


def _runs_fit(context: Context, one_run: Usage, estimate: Estimate) -> Finding:
    """Over-quota when the runs of a schedule that can overlap (estimate.at_once) exceed a
    quota's cap on their own; budgets are charged run by run, not here."""
    at_once = estimate.at_once
    run = estimate.run
    together = one_run._replace(
        experiment="",  # no budget
        gpus=one_run.gpus * at_once,
        gpus_by_type=tuple((t, n * at_once) for t, n in one_run.gpus_by_type),
        usd=run.usd * at_once if run is not None else one_run.usd,
    )
    # quotas only from this check (an experiment "" is an unlisted one now, not none); and
    # what the policy alone says of the runs' experiment (unlisted ones denied)
    held = limits(context, together, _NoUse()).finding.reasons
    reasons = (
        *(reason for reason in held if reason.code == "over-quota"),
        *limits(context, one_run, None).finding.reasons,
    )
    return Finding(reasons) if reasons else NOTHING
