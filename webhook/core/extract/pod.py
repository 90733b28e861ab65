"""A bare Pod, read into a Workload."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..catalog import PriceTable
from ..policy import Policy
from ..types import ANNOTATION_GPU_TYPE, PodShape, Reason, Request, Workload, WorkloadClass
from .podspec import ObjectError, field, read_deadline, read_gpus, read_placement

__all__ = ["extract_pod", "read_metadata"]


def read_metadata(
    obj: Mapping[str, Any],
) -> tuple[Mapping[str, Any], dict[str, str], dict[str, str]]:
    """metadata, labels and annotations of an object, with their types checked."""
    metadata = field(obj, "metadata", "", dict, {})
    labels = field(metadata, "labels", "metadata", dict, {})
    annotations = field(metadata, "annotations", "metadata", dict, {})
    return metadata, labels, annotations


def _owner_class(metadata: Mapping[str, Any], username: str, policy: Policy) -> WorkloadClass:
    owners = field(metadata, "ownerReferences", "metadata", list, ())
    for i, owner in enumerate(owners):
        if type(owner) is not dict:
            raise ObjectError(f"metadata.ownerReferences[{i}]", "object", owner)
        if not owner.get("controller"):
            continue
        api_version = str(owner.get("apiVersion", ""))
        group = api_version.rpartition("/")[0]
        role = policy.controller_role(group, str(owner.get("kind", "")), username)
        if role == "priced":
            return "controlled"
        if role == "serving":
            return "serving"
    return "batch"


def extract_pod(request: Request, *, table: PriceTable, policy: Policy) -> Workload | None:
    """The Pod's GPU workload, or None when it asks for no GPU (the common, cheap case)."""
    obj = request.obj
    spec = field(obj, "spec", "", dict, {})
    problems: list[Reason] = []
    gpus = read_gpus(spec, "spec", table, problems)
    if not gpus and not problems:
        return None
    metadata, labels, annotations = read_metadata(obj)
    deadline = read_deadline(spec, "spec")
    placement = read_placement(spec, "spec", annotations, ANNOTATION_GPU_TYPE)
    return Workload(
        kind="Pod",
        namespace=request.namespace or str(metadata.get("namespace") or ""),
        name=request.name or str(metadata.get("name") or ""),
        generate_name=str(metadata.get("generateName") or ""),
        labels=labels,
        annotations=annotations,
        workload_class=_owner_class(metadata, request.username, policy),
        pods=(PodShape(label="pod", gpus=gpus, placement=placement),),
        existing_deadline=deadline,
        deadline_path="/spec/activeDeadlineSeconds",
        problems=tuple(problems),
    )
