"""GPUs: how many a pod may ask for, which types the table can price, and which types the
namespace allows.
"""

from __future__ import annotations

from .. import messages
from ..catalog import DEVICE_PREFIX
from ..pricing import Pricing
from ..types import Reason
from .context import NOTHING, Context, Finding

__all__ = ["allowed_types", "gpu_types", "pod_size"]


def pod_size(context: Context) -> Finding:
    """No pod may ask for more GPUs than a node has (the namespace's max_gpus_per_pod)."""
    most = context.policy.max_gpus_per_pod
    reasons = []
    for shape in context.workload.pods:
        gpus = shape.gpus[0].units if len(shape.gpus) == 1 else sum(g.units for g in shape.gpus)
        if gpus > most:
            reasons.append(Reason("invalid-gpu-request", messages.too_many_gpus(gpus, most)))
    return Finding(tuple(reasons)) if reasons else NOTHING


def gpu_types(context: Context, pricing: Pricing) -> Finding:
    """GPU types the table does not know: an annotation naming none is an error; a pod
    that pins no known type is priced as the dearest possible, or denied, as the
    namespace's unknown_gpu says."""
    if not pricing.unresolved and not pricing.noted:
        return NOTHING  # the common case: every type pinned, and known
    table, policy, namespace = context.table, context.policy, context.workload.namespace
    trusted = policy.gpu_type_annotation == "trusted"  # then the annotation is a way through
    reasons: list[Reason] = []
    warnings: list[str] = []
    for resolution in pricing.resolutions:
        if resolution.unknown_annotation:
            text = messages.unknown_gpu_annotation(resolution.unknown_annotation, table.gpus)
            reasons.append(Reason("unknown-gpu-type", text))
        if resolution.annotation_outpriced:
            warnings.append(messages.annotation_outpriced(*resolution.annotation_outpriced))
    if pricing.unresolved and not reasons:
        unknown_classes = _unknown_device_classes(context)
        if unknown_classes:
            return _unknown_devices(context, unknown_classes, warnings)
        # gathered only here: most workloads pin their type, and this runs per request
        unknown_labels = [label for r in pricing.resolutions for label in r.unknown_labels]
        # policy gpu_type_annotation: checked, and only the annotation names the type
        unpinned = ""
        if policy.gpu_type_annotation == "checked":
            unpinned = next(
                (r.annotation_only for r in pricing.resolutions if r.annotation_only), ""
            )
        if policy.unknown_gpu == "deny":
            text = (
                messages.annotation_alone_denied(unpinned, namespace)
                if unpinned
                else messages.unknown_gpu_denied(namespace, unknown_labels, annotation=trusted)
            )
            reasons.append(Reason("unknown-gpu-type", text))
        else:
            line = next(line for line in pricing.estimate.lines if not line.resolved)
            gpu = table.gpus[line.gpu_type]
            warnings.append(
                messages.annotation_alone_priced(unpinned, gpu.id, gpu.usd_per_hour)
                if unpinned
                else messages.unknown_gpu_priced(
                    gpu.id, gpu.usd_per_hour, unknown_labels, annotation=trusted
                )
            )
    if not reasons and not warnings:
        return NOTHING
    return Finding(tuple(reasons), tuple(warnings))


def _unknown_device_classes(context: Context) -> list[str]:
    """DeviceClasses the workload's claims name that the pricing table does not list."""
    table = context.table
    found: set[str] = set()
    for shape in context.workload.pods:  # on every unpinned GPU review: no comprehension
        for request in shape.gpus:
            if request.resource.startswith(DEVICE_PREFIX):
                name = table.device_class_of(request.resource)
                if name is not None and name not in table.device_classes:
                    found.add(name)
    return sorted(found) if found else []


def _unknown_devices(context: Context, classes: list[str], warnings: list[str]) -> Finding:
    """Claims from a DeviceClass the table lacks: priced as the dearest GPU, or denied, as
    the namespace's unknown_gpu says; the message names the class and where to add it."""
    if context.policy.unknown_gpu == "deny":
        text = messages.unknown_device_class_denied(classes, context.workload.namespace)
        return Finding((Reason("unknown-gpu-type", text),), tuple(warnings))
    gpu = context.table.gpus[context.table.most_expensive()]
    warnings.append(messages.unknown_device_class_priced(classes, gpu.id, gpu.usd_per_hour))
    return Finding((), tuple(warnings))


def allowed_types(context: Context, pricing: Pricing) -> Finding:
    """Every GPU the workload may land on must be of a type the namespace allows. A pod
    that pins no type may land on any GPU, so it must pin one."""
    allowed = context.policy.allowed_gpu_types
    trusted = context.policy.gpu_type_annotation == "trusted"
    if not allowed:
        return NOTHING
    namespace = context.workload.namespace
    reasons: list[Reason] = []
    for shape, resolution in zip(context.workload.pods, pricing.resolutions, strict=True):
        if not shape.gpus:
            continue
        candidates = resolution.candidates
        if any(g.resource.startswith(DEVICE_PREFIX) for g in shape.gpus):
            # DRA devices: their DeviceClass may pin the type the placement leaves open
            lines = [context.table.line_types(g.resource, candidates) for g in shape.gpus]
            candidates = frozenset().union(*lines) if all(lines) else frozenset()
        if not candidates:
            text = messages.gpu_type_unpinned(namespace, sorted(allowed))
        else:
            refused = list(context.table.by_price(candidates - allowed))
            if not refused:
                continue
            text = messages.gpu_type_not_allowed(
                refused, namespace, sorted(allowed), annotation=trusted
            )
        reasons.append(Reason("gpu-type-not-allowed", text))
    return Finding(tuple(reasons)) if reasons else NOTHING
