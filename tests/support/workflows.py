"""Builders for Argo Workflows, CronWorkflows and WorkflowTemplates, and readers of the core's
decisions on them, shared by the tests under tests/core/workflows/.

Without a costgate.io/max-runtime annotation a workflow runs for the default 12h (`DAY`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jsonpatch

from tests.support.builders import LABELS, container
from webhook.core.engine import Config
from webhook.core.patch import patch_ops

A100, H100, T4 = "a100-80gb", "h100-80gb", "t4"
PRODUCT = "nvidia.com/gpu.product"
NODE_LABEL = {A100: "NVIDIA-A100-SXM4-80GB", H100: "NVIDIA-H100-80GB-HBM3", T4: "Tesla-T4"}
ARGO_SA = "system:serviceaccount:argo:argo"
DAY = 12  # hours: the policy's default runtime
GPU = "nvidia.com/gpu"


def on(gpu_type: str) -> dict[str, str]:
    """The nodeSelector that pins a GPU type (NVIDIA GPU feature discovery label)."""
    return {PRODUCT: NODE_LABEL[gpu_type]}


def gpu(name: str, gpus: int, gpu_type: str | None = A100, **extra: Any) -> dict[str, Any]:
    """A container template asking for `gpus` GPUs, pinned to `gpu_type` (None: unpinned)."""
    template: dict[str, Any] = {
        "name": name,
        "container": container(limits={GPU: str(gpus)} if gpus else {}),
    }
    if gpu_type is not None:
        template["nodeSelector"] = on(gpu_type)
    template.update(extra)
    return template


def steps(name: str, *groups: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "steps": [list(group) for group in groups], **extra}


def dag(name: str, *tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "dag": {"tasks": list(tasks)}, **extra}


def call(name: str, template: str, **extra: Any) -> dict[str, Any]:
    """A step or DAG task invoking `template`."""
    return {"name": name, "template": template, **extra}


def workflow(
    *templates: dict[str, Any],
    entrypoint: str = "main",
    spec: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    name: str = "train",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "team-a",
        "labels": dict(LABELS) if labels is None else labels,
    }
    if annotations is not None:
        metadata["annotations"] = annotations
    body = {"entrypoint": entrypoint, "templates": list(templates), **(spec or {})}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": metadata,
        "spec": body,
    }


def cron(wf: dict[str, Any], workflow_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"schedule": "0 2 * * *", "workflowSpec": wf["spec"]}
    if workflow_metadata is not None:
        spec["workflowMetadata"] = workflow_metadata
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {**wf["metadata"], "name": "nightly"},
        "spec": spec,
    }


def owned_by(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """`obj` with a controller ownerReference to an Argo object of `kind`."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": kind,
            "name": "owner",
            "uid": "u",
            "controller": True,
        }
    ]
    return obj


def codes(decision) -> list[str]:
    return [r.code for r in decision.reasons]


def patched(decision, obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server stores it after the mutating webhook's JSONPatch."""
    return jsonpatch.apply_patch(copy.deepcopy(obj), patch_ops(decision, obj))


def workflow_template(name: str, spec: dict[str, Any], *, cluster: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if not cluster:
        metadata["namespace"] = "team-a"
    kind = "ClusterWorkflowTemplate" if cluster else "WorkflowTemplate"
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


def submit(spec: dict[str, Any], name: str = "run") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": "team-a", "labels": dict(LABELS)},
        "spec": spec,
    }


def rate(config: Config) -> Callable[[str], float]:
    return lambda gpu_type: config.table.gpus[gpu_type].usd_per_hour


def money(usd: float) -> str:
    return f"${usd:,.2f}"


# A DAG fanning 3 items of 2 × a100 out next to 1 × h100, no template deadline: peak
# (3 × 2 × a100 + 1 × h100) × 12h.
DAG_FAN_OUT = workflow(
    dag("main", call("sweep", "train", withItems=[1, 2, 3]), call("score", "eval")),
    gpu("train", 2),
    gpu("eval", 1, H100),
)

# 4 items × (1 + 2 retries) of 4 × a100 with a 2h deadline: per-step 96 a100-hours, below
# the peak's 4 × 4 × a100 × 12h.
RETRIED_SWEEP = workflow(
    steps("main", [call("t", "train", withItems=[1, 2, 3, 4])]),
    gpu("train", 4, activeDeadlineSeconds=7200, retryStrategy={"limit": 2}),
)
