"""Small builders for Pod objects and requests in core tests."""

from __future__ import annotations

from typing import Any

from webhook.core.types import Request

LABELS = {"owner": "alice", "experiment": "exp-1"}


def container(
    name: str = "main", limits: dict | None = None, requests: dict | None = None, **extra: Any
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if limits is not None:
        resources["limits"] = limits
    if requests is not None:
        resources["requests"] = requests
    return {"name": name, "image": "busybox", "resources": resources, **extra}


def pod(
    *,
    gpus: int | str | None = 1,
    resource: str = "nvidia.com/gpu",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    spec: dict[str, Any] | None = None,
    owner: dict[str, Any] | None = None,
    name: str = "job-1",
    namespace: str = "team-a",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    metadata["labels"] = dict(LABELS) if labels is None else labels
    if annotations is not None:
        metadata["annotations"] = annotations
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    if containers is None:
        limits = {} if gpus is None else {resource: str(gpus) if isinstance(gpus, int) else gpus}
        containers = [container(limits=limits)]
    body: dict[str, Any] = {"containers": containers, "restartPolicy": "Never"}
    if init is not None:
        body["initContainers"] = init
    body.update(spec or {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": body}


def request(
    obj: dict[str, Any],
    *,
    operation: str = "CREATE",
    username: str = "alice",
    old: dict[str, Any] | None = None,
) -> Request:
    metadata = obj.get("metadata", {})
    api_version = obj.get("apiVersion", "v1")
    return Request(
        uid="test-uid",
        operation=operation,
        group=api_version.rpartition("/")[0],
        kind=obj.get("kind", "Pod"),
        namespace=metadata.get("namespace", "team-a"),
        name=metadata.get("name", ""),
        obj=obj,
        old_obj=old,
        username=username,
    )
