"""Who made an object: a workload's class from its controller ownerReference and the
request's user. An ownerReference alone proves nothing (anyone can write one); the user the
API server authenticated does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..policy import Policy
from ..types import ANNOTATION_PRICED_BY, WorkloadClass
from .podspec import ObjectError, field

__all__ = ["SCHEDULES", "owner_class", "run_of"]

# Owners whose controller starts runs on a schedule: what they create is a `run`, priced and
# charged on its own (the schedule was gated per month). What any other priced owner creates
# (a Deployment's ReplicaSet, a JobSet's Jobs, a Workflow's pods) was priced with it.
SCHEDULES = frozenset({("batch", "CronJob"), ("argoproj.io", "CronWorkflow")})


def owner_class(
    metadata: Mapping[str, Any], username: str, policy: Policy, created: str = "Pod"
) -> WorkloadClass:
    """batch, or the role of the controller that made this `created` object for its owner:
    a pod of a priced owner is `controlled`; a Job or Workflow a schedule's controller made
    (CronJob, CronWorkflow: gated per month) is a `run`, priced and charged on its own."""
    owners = field(metadata, "ownerReferences", "metadata", list, ())
    for i, owner in enumerate(owners):
        if type(owner) is not dict:
            raise ObjectError(f"metadata.ownerReferences[{i}]", "object", owner)
        if not owner.get("controller"):
            continue
        group = str(owner.get("apiVersion", "")).rpartition("/")[0]
        kind = str(owner.get("kind", ""))
        role = policy.controller_role(group, kind, username, created)
        if role == "priced":
            return "run" if (group, kind) in SCHEDULES and created != "Pod" else "controlled"
        if role == "serving":
            # A pod of a ReplicaSet, StatefulSet or DaemonSet whose template carries the
            # mark of a kind costgate priced (the object itself, or the Deployment, Notebook
            # or LeaderWorkerSet above it): priced with that object, not per pod again.
            annotations = metadata.get("annotations")
            if isinstance(annotations, dict) and annotations.get(ANNOTATION_PRICED_BY):
                return "controlled"
            return "serving"
    return "batch"


def run_of(metadata: Mapping[str, Any]) -> str:
    """`Kind/name` of a run's controller owner (its CronJob or CronWorkflow), for messages."""
    for owner in metadata.get("ownerReferences") or ():
        if type(owner) is dict and owner.get("controller"):
            return f"{owner.get('kind', '')}/{owner.get('name', '')}"
    return ""
