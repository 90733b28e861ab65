"""Workload + price table -> Estimate, with a per-line breakdown.

The estimate is an upper bound, so every doubt resolves towards the dearer GPU: several
allowed types price as the most expensive, a type nothing pins down prices by the
unknown-gpu rule, and the gpu-type annotation (which the user writes) can raise a price
that node selectors imply but never lower it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import PriceTable
from .types import Estimate, EstimateLine, Placement, Workload

__all__ = ["Pricing", "TypeResolution", "price", "resolve_types"]


@dataclass(frozen=True, slots=True)
class TypeResolution:
    """What a pod's placement says about its GPU type."""

    candidates: frozenset[str]  # types it may get; empty when nothing pins the type
    unknown_annotation: str = ""  # gpu-type annotation naming no type in the table
    unknown_labels: tuple[str, ...] = ()  # "key=value" selectors naming no type in the table
    annotation_outpriced: tuple[str, str] | None = None  # (annotated type, dearer allowed type)


@dataclass(frozen=True, slots=True)
class Pricing:
    estimate: Estimate
    resolutions: tuple[TypeResolution, ...]
    unresolved: bool  # some line was priced by the unknown-gpu rule


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
    cached = table.memo.get(placement)
    if cached is None:
        cached = table.memo.put(placement, _resolve_types(placement, table))
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
    )


def price(workload: Workload, table: PriceTable, *, hours: float, per_month: bool) -> Pricing:
    """Price every GPU line of every pod shape for `hours`."""
    lines: list[EstimateLine] = []
    resolutions: list[TypeResolution] = []
    unresolved = False
    for shape in workload.pods:
        resolution = resolve_types(shape.placement, table)
        resolutions.append(resolution)
        for request in shape.gpus:
            rule = table.resources.get(request.resource)
            fitting = table.dearest_fitting(request.resource, resolution.candidates)
            if fitting is not None:
                gpu_id, resolved = fitting, True
            else:
                allowed = table.candidates(request.resource)
                gpu_id, resolved = (allowed[0] if allowed else table.most_expensive()), False
            unresolved |= not resolved
            gpu = table.gpus[gpu_id]
            if rule is None:  # an unpriced GPU-like resource counts as whole GPUs
                label, unit = request.resource, gpu.usd_per_hour
            elif rule.fraction == 1.0:
                label, unit = gpu_id, gpu.usd_per_hour
            else:
                profile = request.resource.partition("/")[2]
                label, unit = f"{gpu_id}/{profile}", gpu.usd_per_hour * rule.fraction
            lines.append(
                EstimateLine(
                    count=request.count * shape.replicas,
                    label=label,
                    usd_per_hour=unit,
                    gpu_type=gpu_id,
                    resolved=resolved,
                )
            )
    per_hour = sum(line.count * line.usd_per_hour for line in lines)
    estimate = Estimate(
        lines=tuple(lines), hours=hours, usd=round(per_hour * hours, 2), per_month=per_month
    )
    return Pricing(estimate=estimate, resolutions=tuple(resolutions), unresolved=unresolved)
