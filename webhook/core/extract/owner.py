"""Who made an object: a workload's class from its controller ownerReference and the
request's user. An ownerReference alone proves nothing (anyone can write one); the user the
API server authenticated does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..policy import Policy
from ..types import ANNOTATION_PRICED_BY, WorkloadClass
from .podspec import ObjectError, field

__all__ = ["owner_class"]


def owner_class(
    metadata: Mapping[str, Any], username: str, policy: Policy, created: str = "Pod"
) -> WorkloadClass:
    """batch, or the role of the controller that made this `created` object for its owner."""
    owners = field(metadata, "ownerReferences", "metadata", list, ())
    for i, owner in enumerate(owners):
        if type(owner) is not dict:
            raise ObjectError(f"metadata.ownerReferences[{i}]", "object", owner)
        if not owner.get("controller"):
            continue
        group = str(owner.get("apiVersion", "")).rpartition("/")[0]
        role = policy.controller_role(group, str(owner.get("kind", "")), username, created)
        if role == "priced":
            return "controlled"
        if role == "serving":
            # A pod of a ReplicaSet, StatefulSet or DaemonSet whose template carries the
            # mark of a kind costgate priced (the object itself, or the Deployment, Notebook
            # or LeaderWorkerSet above it): priced with that object, not per pod again.
            annotations = metadata.get("annotations")
            if isinstance(annotations, dict) and annotations.get(ANNOTATION_PRICED_BY):
                return "controlled"
            return "serving"
    return "batch"
