"""Workload + price table -> Estimate, with a per-line breakdown, and what the workload
holds once admitted (`demand`: GPUs at its busiest, per type, and the cost it commits).

The estimate is an upper bound, so every doubt resolves towards the dearer GPU: several
allowed types price as the most expensive, a type nothing pins down prices by the
unknown-gpu rule, and the gpu-type annotation (which the user writes) can raise a price
that node selectors imply but never lower it; alone, it names the type only where the policy
trusts it (gpu_type_annotation: trusted).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

from .catalog import DEVICE_PREFIX, PriceTable
from .policy import NamespacePolicy
from .types import (
    DEFAULT_GRACE_SECONDS,
    INFINITE,
    Estimate,
    EstimateLine,
    GpuRequest,
    Placement,
    PodShape,
    Schedule,
    Workload,
)
from .usage import EXPERIMENT_LABEL, OWNER_LABEL, Usage

__all__ = ["Pricing", "TypeResolution", "demand", "price", "price_for", "resolve_types"]


class TypeResolution(NamedTuple):
    """What a pod's placement says about its GPU type."""

    candidates: frozenset[str]  # types it may get; empty when nothing pins the type
    unknown_annotation: str = ""  # gpu-type annotation naming no type in the table
    unknown_labels: tuple[str, ...] = ()  # "key=value" selectors naming no type in the table
    annotation_outpriced: tuple[str, str] | None = None  # (annotated type, dearer allowed type)
    annotation_only: str = ""  # the annotated type, when nothing else pins the type


class Pricing(NamedTuple):
    estimate: Estimate
    resolutions: tuple[TypeResolution, ...]
    unresolved: bool  # some line was priced by the unknown-gpu rule
    # per pod shape: (GPU type, GPUs) with MIG slices as fractions of their GPU (for quotas)
    shape_gpus: tuple[tuple[tuple[str, float], ...], ...] = ()
    # some annotation names a type the table lacks, or one the node selectors outprice
    noted: bool = False


def _label_types(
    table: PriceTable, key: str, values: tuple[str, ...], unknown: list[str]
) -> set[str] | None:
    """Types the values of one GPU-naming key allow; None if the key names no GPU type."""
    found: set[str] = set()
    for value in values:
        types = table.types_for_label(key, value)
        if types is None:
            return None
        if not types:
            unknown.append(f"{key}={value}")
        found.update(types)
    return found


def _affinity_types(table: PriceTable, placement: Placement, unknown: list[str]) -> set[str] | None:
    """Union over the ORed terms of the types each term allows; None if any term leaves the
    type open (the scheduler may then pick that term and any GPU)."""
    if not placement.required_terms:
        return None
    allowed: set[str] = set()
    for term in placement.required_terms:
        term_types: set[str] | None = None
        for key, operator, values in term:
            if operator == "In":
                types = _label_types(table, key, values, unknown)
            elif operator == "NotIn":
                excluded = _label_types(table, key, values, unknown)
                types = None if excluded is None else set(table.gpus) - excluded
            else:  # Exists, DoesNotExist, Gt, Lt do not name a type
                types = None
            if types is not None:
                term_types = types if term_types is None else term_types & types
        if term_types is None:
            return None
        allowed |= term_types
    return allowed


def resolve_types(placement: Placement, table: PriceTable) -> TypeResolution:
    """The GPU types a placement allows: annotation, nodeSelector, then required affinity.

    Pods of one team look alike, so the answer is remembered per table (bounded)."""
    cached: TypeResolution | None = table.memo.get(placement)
    if cached is None:
        cached = _resolve_types(placement, table)
        table.memo.put(placement, cached)
    return cached


def _resolve_types(placement: Placement, table: PriceTable) -> TypeResolution:
    unknown: list[str] = []
    pinned: set[str] | None = None
    for key, value in placement.node_selector:
        types = _label_types(table, key, (value,), unknown)
        if types is not None:
            # nodeSelector entries are ANDed; an empty intersection means contradicting
            # aliases, and the dearer reading is the safe one.
            pinned = types if pinned is None else (pinned & types) or (pinned | types)
    if pinned is None:
        pinned = _affinity_types(table, placement, unknown)

    annotated: set[str] = set()
    unknown_annotation = ""
    outpriced = None
    if placement.gpu_type_annotation:
        annotated = set(table.resolve_alias(placement.gpu_type_annotation))
        if not annotated:
            unknown_annotation = placement.gpu_type_annotation
        elif pinned:
            dearest_annotated = table.by_price(annotated)[0]
            dearest_pinned = table.by_price(pinned)[0]
            if table.gpus[dearest_pinned].usd_per_hour > table.gpus[dearest_annotated].usd_per_hour:
                outpriced = (dearest_annotated, dearest_pinned)
    return TypeResolution(
        candidates=frozenset(annotated | (pinned or set())),
        unknown_annotation=unknown_annotation,
        unknown_labels=tuple(unknown),
        annotation_outpriced=outpriced,
        annotation_only=table.by_price(annotated)[0] if annotated and not pinned else "",
    )


def _line(
    request: GpuRequest, resolution: TypeResolution, table: PriceTable
) -> tuple[str, float, str, bool, float]:
    """(label, $/h per unit, GPU type, resolved, fraction of a GPU per unit) for one GPU
    resource of a pod."""
    rule = table.resources.get(request.resource)
    fitting = table.dearest_fitting(request.resource, resolution.candidates)
    if fitting is not None:
        gpu_id, resolved = fitting, True
    else:
        allowed = table.candidates(request.resource)
        gpu_id = allowed[0] if allowed else table.most_expensive()
        # a DeviceClass of one GPU type pins it, whatever the placement says
        resolved = len(allowed) == 1 and request.resource.startswith(DEVICE_PREFIX)
    gpu = table.gpus[gpu_id]
    if rule is None:  # DRA devices, and an unpriced GPU-like resource: whole GPUs
        label = gpu_id if request.resource.startswith(DEVICE_PREFIX) else request.resource
        return label, gpu.usd_per_hour, gpu_id, resolved, 1.0
    if rule.fraction == 1.0:
        return gpu_id, gpu.usd_per_hour, gpu_id, resolved, 1.0
    profile = request.resource.partition("/")[2]
    return (
        f"{gpu_id}/{profile}",
        gpu.usd_per_hour * rule.fraction,
        gpu_id,
        resolved,
        rule.fraction,
    )


def _resolved(placement: Placement, table: PriceTable, trust_annotation: bool) -> TypeResolution:
    resolution = resolve_types(placement, table)
    if resolution.annotation_only and not trust_annotation:
        # the rules read this too: a type only the annotation names allows no type
        # (allowed_gpu_types), as it pins no price
        resolution = resolution._replace(candidates=frozenset())
    return resolution


def _dearer(
    shape: PodShape, first: TypeResolution, second: TypeResolution, table: PriceTable
) -> TypeResolution:
    """Of two places a pod may run (its placement depends on the Argo version), the one it
    costs more in; one that pins no type is priced by the unknown-gpu rule, which is never
    cheaper (and may deny)."""
    if not first.candidates or not second.candidates:
        return first if not first.candidates else second

    def rate(resolution: TypeResolution) -> float:
        return sum(r.units * _line(r, resolution, table)[1] for r in shape.gpus)

    return second if rate(second) > rate(first) else first


def _grace_hours(shape: PodShape) -> float:
    """How long the kubelet may keep this shape's pods, and GPUs, after their deadline.

    A grace period up to the API server's default (30 s, which it writes into every pod it
    stores) is not priced: pricing it would move every estimate by 30 s of GPU time, and the
    server (which sees 30) and `costgate estimate` (which sees it unset) must agree. A longer
    one is priced in full; the policy's max_grace_seconds caps it (rules/grace.py)."""
    grace = shape.grace
    if grace is None or grace <= DEFAULT_GRACE_SECONDS:
        return 0.0
    return grace / 3600


def _steps_bound(workload: Workload, rates: list[float], hours: float) -> float:
    """Σ runs × $/h × per-run hours, when every GPU template has a deadline and bounded
    runs; otherwise unbounded. Each run also stops at the workflow's deadline, except the
    exit handler's, which outlive it."""
    total = 0.0
    for shape, rate in zip(workload.pods, rates, strict=True):
        if rate == 0:
            continue
        if shape.deadline is None or shape.runs is None or math.isinf(shape.runs):
            return INFINITE
        own = shape.deadline / 3600
        ran = own if shape.after_deadline else min(own, hours)
        total += shape.runs * rate * (ran + _grace_hours(shape))
    return total


def _after_deadline(workload: Workload, rates: list[float]) -> float:
    """The exit handler's peak for as long as its longest template deadline; unbounded if
    a GPU template of it has none."""
    tree = workload.exit_concurrency
    assert tree is not None
    longest = 0.0
    for index in tree.shapes():
        if rates[index] == 0:
            continue
        deadline = workload.pods[index].deadline
        if deadline is None:
            return INFINITE
        longest = max(longest, deadline / 3600 + _grace_hours(workload.pods[index]))
    return tree.peak(rates) * longest


def price(
    workload: Workload,
    table: PriceTable,
    hours: float,
    per_month: bool,
    trust_annotation: bool = False,
) -> Pricing:
    """Price every GPU line of every pod shape for `hours` (the workload's deadline).

    `trust_annotation` False (policy gpu_type_annotation: checked, the default): a type only
    the gpu-type annotation names is not pinned, and the unknown-gpu rule prices it. True
    (`trusted`) only where the policy says so.

    Pods and Jobs: all replicas for the whole deadline, then their grace period above the
    default (terminationGracePeriodSeconds: the kubelet keeps a stopped pod's GPUs that
    long). Workflows: the smaller of two upper bounds, the dearest moment of the concurrency
    tree for the whole deadline and the longest grace period, and (when every GPU template
    has a deadline) the sum over templates of runs × price × (deadline + grace period).
    """
    lines: list[EstimateLine] = []
    resolutions: list[TypeResolution] = []
    rates: list[float] = []  # $/h of one pod of each shape
    shape_gpus: list[tuple[tuple[str, float], ...]] = []
    unresolved = False
    workflow = workload.concurrency is not None
    per_hour = 0.0
    grace_hours = 0.0  # the longest grace period of a GPU pod (after the deadline)
    grace_usd = 0.0  # Pods and Jobs: what their pods cost through their grace periods
    for shape in workload.pods:
        resolution = _resolved(shape.placement, table, trust_annotation)
        if shape.alternative is not None:
            other = _resolved(shape.alternative, table, trust_annotation)
            resolution = _dearer(shape, resolution, other, table)
        resolutions.append(resolution)
        rate = 0.0
        shape_hours = None
        shape_grace = _grace_hours(shape)
        if workflow and shape.deadline is not None:
            own = shape.deadline / 3600
            shape_hours = (own if shape.after_deadline else min(own, hours)) + shape_grace
        held: list[tuple[str, float]] = []
        for request in shape.gpus:
            label, unit, gpu_id, resolved, fraction = _line(request, resolution, table)
            held.append((gpu_id, request.units * fraction))
            unresolved |= not resolved
            rate += request.units * unit
            units = request.units if workflow else request.units * shape.replicas
            per_hour += units * unit
            lines.append(
                EstimateLine(
                    units,
                    label,
                    unit,
                    gpu_id,
                    resolved,
                    shape.label if workflow else "",
                    shape.runs,
                    shape_hours,
                )
            )
        rates.append(rate)
        shape_gpus.append(tuple(held))
        if shape_grace and rate:
            if not shape.after_deadline and shape_grace > grace_hours:
                grace_hours = shape_grace
            if not workflow:
                grace_usd += rate * shape.replicas * shape_grace
    basis: Literal["runtime", "peak", "steps"] = "runtime"
    if per_month:  # serving: priced per month, and a grace period is no part of it
        grace_hours = grace_usd = 0.0
    if workload.concurrency is None:
        usd = per_hour * hours + grace_usd
    else:
        per_hour = workload.concurrency.peak(rates)
        # No bound on what runs at once is no bound on cost, however short the deadline
        # (∞ × 0 h would be NaN, which every comparison lets through). Pods the deadline
        # stops keep their GPUs through their grace period: the longest one is priced at
        # the peak.
        by_peak = per_hour if math.isinf(per_hour) else per_hour * (hours + grace_hours)
        if workload.exit_concurrency is not None:
            by_peak += _after_deadline(workload, rates)
        by_steps = _steps_bound(workload, rates, hours)
        if by_steps < by_peak:
            usd, basis = by_steps, "steps"
        else:
            usd, basis = by_peak, "peak"
    estimate = Estimate(
        tuple(lines),
        hours,
        usd if usd == INFINITE else round(usd, 2),
        per_month,
        basis,
        per_hour,
        grace_hours,
    )
    noted = any(r.unknown_annotation or r.annotation_outpriced for r in resolutions)
    return Pricing(estimate, tuple(resolutions), unresolved, tuple(shape_gpus), noted)


def price_for(
    workload: Workload,
    table: PriceTable,
    policy: NamespacePolicy,
    seconds: int | None,
    hours_per_month: float,
) -> Pricing:
    """The price of a workload under its namespace's rules: batch work for `seconds` (its
    runtime), serving work for a month, a schedule (CronJob, CronWorkflow) for a month of
    runs of `seconds` each."""
    serving = workload.workload_class == "serving"
    hours = hours_per_month if serving else (seconds or 0) / 3600
    run = price(workload, table, hours, serving, policy.gpu_type_annotation == "trusted")
    if workload.schedule is None or serving:
        return run
    return run._replace(estimate=_monthly(run.estimate, workload.schedule, hours_per_month))


def _times(a: float, b: float) -> float:
    return 0.0 if a == 0 or b == 0 else a * b  # no runs of an unbounded run cost nothing


def _monthly(run: Estimate, schedule: Schedule, hours_per_month: float) -> Estimate:
    """What a schedule of such runs can spend in a month: its runs a month × one run, and
    never more than the most runs that overlap (a run holds its GPUs for its deadline and
    grace period) running all month."""
    at_once = schedule.at_once((run.hours + run.grace_hours) * 3600)
    by_runs = _times(schedule.runs_per_month, run.usd)
    by_peak = _times(at_once * hours_per_month, run.peak_usd_per_hour)
    usd = by_runs
    basis: Literal["runtime", "peak"] = "runtime"
    if by_peak < by_runs:
        usd, basis = by_peak, "peak"
    return run._replace(
        usd=usd if usd == INFINITE else round(usd, 2),
        hours=hours_per_month,
        per_month=True,
        basis=basis,
        grace_hours=0.0,
        run=run,
        at_once=at_once,
        schedule=schedule,
    )


def demand(workload: Workload, pricing: Pricing) -> Usage:
    """What the workload holds once admitted: GPUs at the busiest moment, in all and per
    type, and its estimate as the cost it commits.

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
