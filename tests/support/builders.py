"""Builders for Kubernetes objects and admission requests: Pods and their containers, the GPU
pod the quota tests use, a node affinity for GPU products, a core `Request` and the
AdmissionReview body the API server would send for an object."""

from __future__ import annotations

from typing import Any

import orjson

from webhook.core.types import Request

LABELS = {"owner": "alice", "experiment": "exp-1"}
H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}  # $6.88/h
T4 = {"nvidia.com/gpu.product": "Tesla-T4"}  # $0.978/h


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


def gpu_pod(
    gpus: int = 1,
    *,
    selector: dict[str, str] | None = None,
    runtime: str = "1h",
    owner: str = "alice",
    experiment: str = "exp-1",
    namespace: str = "team-a",
    name: str = "job",
    resource: str = "nvidia.com/gpu",
) -> dict[str, Any]:
    """A labelled GPU pod pinned to a type (H100 unless `selector` says otherwise), declaring
    its runtime."""
    return pod(
        gpus=gpus,
        resource=resource,
        name=name,
        namespace=namespace,
        labels={"owner": owner, "experiment": experiment},
        annotations={"costgate.io/max-runtime": runtime},
        spec={"nodeSelector": selector if selector is not None else H100},
    )


def gpu_product_affinity(*products: str) -> dict[str, Any]:
    """A pod `affinity` that requires a node whose nvidia.com/gpu.product is one of these."""
    expression = {"key": "nvidia.com/gpu.product", "operator": "In", "values": list(products)}
    terms = [{"matchExpressions": [expression]}]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    }


_uids = iter(range(10**9))


def review(obj: dict[str, Any], *, dry_run: bool = False, operation: str = "CREATE") -> bytes:
    """A validating review as the API server sends it: the object has its uid by then."""
    obj = orjson.loads(orjson.dumps(obj))
    obj["metadata"].setdefault("uid", f"uid-{next(_uids)}")
    req = request(obj, operation=operation)
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"review-{next(_uids)}",
            "kind": {"group": req.group, "version": "v1", "kind": req.kind},
            "resource": {"group": req.group, "version": "v1", "resource": "pods"},
            "namespace": req.namespace,
            "name": req.name,
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": obj,
            "dryRun": dry_run,
        },
    }
    return orjson.dumps(body)
