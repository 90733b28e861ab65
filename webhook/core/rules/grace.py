"""Grace periods: how long a GPU pod may keep its GPUs after its deadline stops it.

The kubelet stops a pod past its activeDeadlineSeconds (and a Job's or a Workflow's
deadline deletes its pods) with the pod's terminationGracePeriodSeconds: a preStop hook
may run, and the GPUs stay held, for all of it. The estimate prices it (pricing.py); this
rule caps it, so a deadline cannot be outlived by a grace period of days.
"""

from __future__ import annotations

from .. import messages
from ..types import DEFAULT_GRACE_SECONDS, PodShape, Reason
from .context import NOTHING, Context, Finding

__all__ = ["grace"]


def grace(context: Context) -> Finding:
    """No GPU pod of batch work may ask for a grace period above the namespace's
    max_grace_seconds (a pod that sets none gets the API server's default, 30 s). Serving
    pods have no deadline to outlive, and are priced per month: they may drain for longer."""
    if context.workload.workload_class != "batch":
        return NOTHING
    most = context.policy.max_grace_seconds
    workload = context.workload
    if most >= DEFAULT_GRACE_SECONDS:  # the common case: only pods that set one can pass it
        for shape in workload.pods:
            if shape.grace is not None and shape.grace > most:
                break
        else:
            return NOTHING
    shapes = [s for s in workload.pods if _held(s) > most]
    if not shapes:
        return NOTHING
    reasons = tuple(
        Reason(
            "runtime-too-long",
            messages.grace_too_long(
                workload.display_name if shape.label == "pod" else shape.label,
                _held(shape),
                most,
                workload.namespace,
            ),
        )
        for shape in shapes
    )
    return Finding(reasons)


def _held(shape: PodShape) -> int:
    return DEFAULT_GRACE_SECONDS if shape.grace is None else shape.grace
