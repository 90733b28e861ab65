"""What a live object in the cluster holds, as quotas count it: the read side of the state.

The watch cache calls `holding` for every object it sees, so it prices with what the object
says now (the deadline costgate set), never with what a user could edit afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .config import Config
from .extract.kinds import extractor_for
from .extract.podspec import ObjectError
from .policy import Policy
from .pricing import demand, price_for
from .types import ANNOTATION_ESTIMATED_COST, ANNOTATION_PRICED_BY, Request
from .usage import Usage

__all__ = ["finished", "holding"]

# Kinds that hold GPUs while they run. Cron* and templates only make them.
_RUNNING_KINDS = frozenset({("", "Pod"), ("batch", "Job"), ("argoproj.io", "Workflow")})
_DONE_PHASES = frozenset({"Succeeded", "Failed", "Error"})


def finished(kind: str, obj: Mapping[str, Any]) -> bool:
    """Whether a Pod, Job or Workflow has stopped holding its GPUs."""
    status = obj.get("status")
    if not isinstance(status, dict):
        return False
    if kind == "Job":
        conditions = status.get("conditions")
        return isinstance(conditions, list) and any(
            isinstance(c, dict)
            and c.get("type") in ("Complete", "Failed")
            and c.get("status") == "True"
            for c in conditions
        )
    return status.get("phase") in _DONE_PHASES


def _creator(metadata: Mapping[str, Any], policy: Policy) -> str:
    """A user of the trusted controller that owns this object, as the admission saw it."""
    owners = metadata.get("ownerReferences")
    if not isinstance(owners, list):
        return ""
    for owner in owners:
        if isinstance(owner, dict) and owner.get("controller"):
            group = str(owner.get("apiVersion", "")).rpartition("/")[0]
            for controller in policy.trusted_controllers:
                if controller.kind == owner.get("kind") and controller.api_group == group:
                    return next(iter(sorted(controller.users)), "")
    return ""


def _job_pod(metadata: Mapping[str, Any]) -> bool:
    owners = metadata.get("ownerReferences")
    return isinstance(owners, list) and any(
        isinstance(o, dict)
        and o.get("controller")
        and o.get("kind") == "Job"
        and str(o.get("apiVersion", "")).startswith("batch/")
        for o in owners
    )


def _marked_kind(annotations: Any) -> tuple[str, str]:
    """(group, kind) named by a pod's costgate.io/priced-by annotation."""
    value = str(annotations.get(ANNOTATION_PRICED_BY, ""))
    group, _, kind = value.rpartition("/")
    return group, kind


def holding(group: str, kind: str, obj: Mapping[str, Any], config: Config) -> Usage | None:
    """What a live object in the cluster holds, as quotas count it; None when nothing.

    Pods a trusted controller made for an object costgate priced count with that object,
    unless costgate stamped an estimate on them: it prices, and stamps, a pod whose owner
    reference is written by a user, so a spoofed owner does not hide a pod from quotas.
    The estimate uses the deadline in the spec (which costgate set), not annotations a user
    can edit later."""
    extractor = extractor_for(group, kind, config.policy)
    if extractor is None or (group, kind) not in _RUNNING_KINDS or finished(kind, obj):
        return None
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    annotations = metadata.get("annotations")
    stamped = isinstance(annotations, dict) and ANNOTATION_ESTIMATED_COST in annotations
    # A pod of an object priced through the kinds table (a Deployment, a PyTorchJob) counts
    # on its own while it runs: the watch does not follow those objects.
    # (A pod of a Job, a JobSet's, counts with its Job, which the watch follows.)
    marked = (
        kind == "Pod"
        and isinstance(annotations, dict)
        and ANNOTATION_PRICED_BY in annotations
        and not _job_pod(metadata)
    )
    # Only a pod counts with its owner, which the watch counts: a Job a CronJob made, or a
    # Workflow a CronWorkflow made, holds GPUs that nothing else would count.
    creator = "" if stamped or marked or kind != "Pod" else _creator(metadata, config.policy)
    request = Request(
        uid="",
        operation="CREATE",
        group=group,
        kind=kind,
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        obj=obj,
        username=creator,
    )
    try:
        workload = extractor(request, config)
    except (ObjectError, RecursionError):
        return None
    if workload is None or workload.workload_class == "controlled" or not workload.pods:
        return None
    if workload.suspended:  # no pod runs: nothing held until it is resumed
        return None
    if marked:  # priced as its owner's kind prices its pods: serving ones per month
        spec = config.policy.kinds.get(_marked_kind(annotations))
        if spec is not None and spec.workload_class == "serving":
            workload = workload._replace(workload_class="serving")
    policy = config.policy.for_namespace(workload.namespace)
    pricing = price_for(
        workload,
        config.table,
        policy,
        workload.existing_deadline or policy.default_runtime_seconds,
        config.policy.hours_per_month,
    )
    usage = demand(workload, pricing)
    return usage if math.isfinite(usage.usd) and math.isfinite(usage.gpus) else None
