"""Who made an object: a workload's class from its controller ownerReference and the
request's user. An ownerReference alone proves nothing (anyone can write one); the user the
API server authenticated does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..policy import Policy
from ..types import WorkloadClass
from .podspec import ObjectError, field

__all__ = ["owner_class", "run_of"]


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
        role = policy.controller_role(group, str(owner.get("kind", "")), username, created)
        if role == "priced":
            return "controlled" if created == "Pod" else "run"
        if role == "serving":
            return "serving"
    return "batch"


def run_of(metadata: Mapping[str, Any]) -> str:
    """`Kind/name` of a run's controller owner (its CronJob or CronWorkflow), for messages."""
    for owner in metadata.get("ownerReferences") or ():
        if type(owner) is dict and owner.get("controller"):
            return f"{owner.get('kind', '')}/{owner.get('name', '')}"
    return ""
