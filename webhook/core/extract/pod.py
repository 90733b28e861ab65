"""A bare Pod, read into a Workload."""

from __future__ import annotations

from ..config import Config
from ..types import PodShape, Reason, Request, Workload
from .claims import with_claims
from .owner import owner_class
from .podspec import (
    field,
    identity,
    read_deadline,
    read_gpus,
    read_grace,
    read_metadata,
    read_placement,
)

__all__ = ["extract_pod"]


def extract_pod(request: Request, config: Config, /) -> Workload | None:
    """The Pod's GPU workload, or None when it asks for no GPU (the common, cheap case)."""
    obj = request.obj
    spec = field(obj, "spec", "", dict, {})
    problems: list[Reason] = []
    gpus = read_gpus(spec, "spec", config.table, problems)
    unresolved: tuple[str, ...] = ()
    claims = spec.get("resourceClaims")
    if claims:  # DRA: devices counted in claims, not in container resources
        namespace = identity(request, field(obj, "metadata", "", dict, {}))[0]
        gpus, unresolved = with_claims(
            gpus, claims, "spec", namespace, problems, table=config.table, lookup=config.claims
        )
    if not gpus and not problems and not unresolved:
        return None
    metadata, labels, annotations = read_metadata(obj)
    placement = read_placement(spec, "spec", annotations)
    namespace, name, generate_name = identity(request, metadata)
    return Workload(
        kind="Pod",
        namespace=namespace,
        name=name,
        generate_name=generate_name,
        labels=labels,
        annotations=annotations,
        workload_class=owner_class(metadata, request.username, config.policy),
        pods=(
            PodShape(label="pod", gpus=gpus, placement=placement, grace=read_grace(spec, "spec")),
        ),
        existing_deadline=read_deadline(spec, "spec"),
        deadline_path="/spec/activeDeadlineSeconds",
        problems=tuple(problems),
        unresolved=unresolved,
    )
